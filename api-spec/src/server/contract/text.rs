//! [`Text`]: a string field of a request body that takes only a JSON string. poem-openapi's `String`
//! also takes a number or a boolean and turns it into text (`{"name": true}` named a team `true`),
//! which the spec does not allow: a client that sent the wrong type would never learn it.

use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use poem_openapi::types::{
    ParseError, ParseFromJSON, ParseFromXML, ParseFromYAML, ParseResult, ToJSON, ToXML, ToYAML,
    Type,
};
use serde_json::Value;
use std::borrow::Cow;
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

impl Type for Text {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "string".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema::new("string")))
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

impl ParseFromJSON for Text {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value.unwrap_or_default() {
            Value::String(text) => Ok(Text(text)),
            other => Err(ParseError::expected_type(other)),
        }
    }
}

impl ParseFromXML for Text {
    fn parse_from_xml(value: Option<Value>) -> ParseResult<Self> {
        Self::parse_from_json(value)
    }
}

impl ParseFromYAML for Text {
    fn parse_from_yaml(value: Option<Value>) -> ParseResult<Self> {
        Self::parse_from_json(value)
    }
}

impl ToJSON for Text {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.clone()))
    }
}

impl ToXML for Text {
    fn to_xml(&self) -> Option<Value> {
        self.to_json()
    }
}

impl ToYAML for Text {
    fn to_yaml(&self) -> Option<Value> {
        self.to_json()
    }
}

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
