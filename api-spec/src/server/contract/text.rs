//! [`Text`]: a string field of a request body that takes only a JSON string. poem-openapi's `String`
//! also takes a number or a boolean and turns it into text (`{"name": true}` named a team `true`),
//! which the spec does not allow: a client that sent the wrong type would never learn it.

use poem_openapi::registry::MetaSchema;
use poem_openapi::types::{ParseError, ParseFromJSON, ParseResult};
use serde_json::Value;
use std::fmt;
use std::ops::Deref;

/// A string from a request body: a JSON string and nothing else.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Text(pub String);

impl Text {
    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The owned text.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for Text {
    fn from(text: String) -> Self {
        Text(text)
    }
}

impl From<&str> for Text {
    fn from(text: &str) -> Self {
        Text(text.to_owned())
    }
}

impl From<Text> for String {
    fn from(text: Text) -> Self {
        text.0
    }
}

impl ParseFromJSON for Text {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value.unwrap_or_default() {
            Value::String(text) => Ok(Text(text)),
            other => Err(ParseError::expected_type(other)),
        }
    }
}

/// The poem-openapi plumbing of a string newtype (`.0: String`) whose JSON form is its string:
/// [`Type`] named `$name` with the schema `$schema`, [`ToJSON`], and XML and YAML read and written as
/// JSON. The type's own [`ParseFromJSON`] says which strings it takes.
macro_rules! string_type {
    ($type:ty, $name:literal, $schema:expr) => {
        impl ::poem_openapi::types::Type for $type {
            const IS_REQUIRED: bool = true;
            type RawValueType = Self;
            type RawElementValueType = Self;

            fn name() -> ::std::borrow::Cow<'static, str> {
                $name.into()
            }

            fn schema_ref() -> ::poem_openapi::registry::MetaSchemaRef {
                ::poem_openapi::registry::MetaSchemaRef::Inline(Box::new($schema))
            }

            fn as_raw_value(&self) -> Option<&Self::RawValueType> {
                Some(self)
            }

            fn raw_element_iter<'a>(
                &'a self,
            ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
                Box::new(self.as_raw_value().into_iter())
            }
        }

        impl ::poem_openapi::types::ParseFromXML for $type {
            fn parse_from_xml(
                value: Option<::serde_json::Value>,
            ) -> ::poem_openapi::types::ParseResult<Self> {
                <Self as ::poem_openapi::types::ParseFromJSON>::parse_from_json(value)
            }
        }

        impl ::poem_openapi::types::ParseFromYAML for $type {
            fn parse_from_yaml(
                value: Option<::serde_json::Value>,
            ) -> ::poem_openapi::types::ParseResult<Self> {
                <Self as ::poem_openapi::types::ParseFromJSON>::parse_from_json(value)
            }
        }

        impl ::poem_openapi::types::ToJSON for $type {
            fn to_json(&self) -> Option<::serde_json::Value> {
                Some(::serde_json::Value::String(self.0.clone()))
            }
        }

        impl ::poem_openapi::types::ToXML for $type {
            fn to_xml(&self) -> Option<::serde_json::Value> {
                ::poem_openapi::types::ToJSON::to_json(self)
            }
        }

        impl ::poem_openapi::types::ToYAML for $type {
            fn to_yaml(&self) -> Option<::serde_json::Value> {
                ::poem_openapi::types::ToJSON::to_json(self)
            }
        }
    };
}
pub(crate) use string_type;

string_type!(Text, "string", MetaSchema::new("string"));

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_a_json_string_is_text() {
        assert_eq!(
            Text::parse_from_json(Some(json!("Core"))).unwrap(),
            Text::from("Core")
        );
        for wrong in [
            json!(true),
            json!(3),
            json!(1.5),
            json!(null),
            json!([]),
            json!({}),
        ] {
            assert!(
                Text::parse_from_json(Some(wrong.clone())).is_err(),
                "{wrong}"
            );
        }
        // poem-openapi's own String takes them: the reason this type exists.
        assert!(String::parse_from_json(Some(json!(true))).is_ok());
    }
}
