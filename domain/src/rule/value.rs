//! The values a rule is made of: its name, description, content, category, tags and path triggers,
//! gathered in a [`RuleSpec`], and the [`ApprovalQuorum`] that says how many approvals a layer needs.

use crate::value::{
    Layer, ValueError, max_bytes_check, max_chars_check, no_nul_check, trimmed_text,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use std::num::NonZeroU32;

/// Implements `as_str` and `Display` for a `String` newtype.
macro_rules! text_accessors {
    ($name:ident) => {
        impl $name {
            /// The value as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

/// A rule's name: trimmed, 1 to 200 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RuleName(String);

impl RuleName {
    /// The longest name accepted, in characters.
    pub const MAX_CHARS: usize = 200;

    /// Parses a rule name.
    ///
    /// # Errors
    /// [`ValueError::Empty`] for a blank input, [`ValueError::TooLong`] past 200 characters.
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        trimmed_text("name", input, Self::MAX_CHARS).map(Self)
    }
}
text_accessors!(RuleName);

/// A rule's description for the people browsing the library: trimmed, possibly empty, at most 2000
/// characters. It is not rendered into `CLAUDE.md`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Description(String);

impl Description {
    /// The longest description accepted, in characters.
    pub const MAX_CHARS: usize = 2000;

    /// Parses a description (an empty one is allowed).
    ///
    /// # Errors
    /// [`ValueError::TooLong`] past 2000 characters.
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        let trimmed = input.trim();
        max_chars_check("description", trimmed, Self::MAX_CHARS)?;
        Ok(Self(trimmed.to_owned()))
    }
}
text_accessors!(Description);

/// The Markdown body rendered into the managed section: non-blank, at most 64 KiB. Kept exactly as given
/// (whitespace is meaningful in Markdown).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RuleContent(String);

impl RuleContent {
    /// The largest content accepted, in UTF-8 bytes.
    pub const MAX_BYTES: usize = 65_536;

    /// Parses rule content.
    ///
    /// # Errors
    /// [`ValueError::Empty`] for blank content, [`ValueError::TooLong`] past 65,536 bytes.
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        if input.trim().is_empty() {
            return Err(ValueError::Empty { field: "content" });
        }
        max_bytes_check("content", input, Self::MAX_BYTES)?;
        Ok(Self(input.to_owned()))
    }
}
text_accessors!(RuleContent);

/// The category a rule is shown under (a `## <category>` heading in the managed section): trimmed,
/// 1 to 100 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Category(String);

impl Category {
    /// The longest category accepted, in characters.
    pub const MAX_CHARS: usize = 100;

    /// Parses a category.
    ///
    /// # Errors
    /// [`ValueError::Empty`] for a blank input, [`ValueError::TooLong`] past 100 characters.
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        trimmed_text("category", input, Self::MAX_CHARS).map(Self)
    }
}
text_accessors!(Category);

/// A tag: exactly `[a-z0-9][a-z0-9_-]{0,49}`. Nothing is normalized: `Security` is refused, not lowercased,
/// so a tag means the same everywhere it appears.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Tag(String);

impl Tag {
    /// The longest tag accepted, in characters.
    pub const MAX_CHARS: usize = 50;

    /// Parses a tag.
    ///
    /// # Errors
    /// [`ValueError::Empty`] for an empty input, [`ValueError::TooLong`] past 50 characters,
    /// [`ValueError::Malformed`] for any character outside the alphabet or a leading `_`/`-`.
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        const FIELD: &str = "tag";
        let Some(first) = input.chars().next() else {
            return Err(ValueError::Empty { field: FIELD });
        };
        max_chars_check(FIELD, input, Self::MAX_CHARS)?;
        if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
            return Err(ValueError::Malformed {
                field: FIELD,
                reason: "must start with a lowercase letter or a digit".to_owned(),
            });
        }
        if !input
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        {
            return Err(ValueError::Malformed {
                field: FIELD,
                reason: "only lowercase letters, digits, '_' and '-' are allowed".to_owned(),
            });
        }
        Ok(Self(input.to_owned()))
    }
}
text_accessors!(Tag);

/// A path glob (e.g. `src/**/*.rs`) saying which files of a project a project-layer rule applies to:
/// non-empty, at most 512 characters, no NUL, and a valid glob for the `globset` crate. Kept exactly as
/// given.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PathGlob(String);

impl PathGlob {
    /// The longest glob accepted, in characters.
    pub const MAX_CHARS: usize = 512;

    /// Parses a path glob.
    ///
    /// # Errors
    /// [`ValueError::Empty`], [`ValueError::TooLong`], [`ValueError::ContainsNul`], or
    /// [`ValueError::Malformed`] with the glob parser's explanation.
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        const FIELD: &str = "trigger";
        if input.trim().is_empty() {
            return Err(ValueError::Empty { field: FIELD });
        }
        max_chars_check(FIELD, input, Self::MAX_CHARS)?;
        no_nul_check(FIELD, input)?;
        globset::Glob::new(input).map_err(|err| ValueError::Malformed {
            field: FIELD,
            reason: err.kind().to_string(),
        })?;
        Ok(Self(input.to_owned()))
    }
}
text_accessors!(PathGlob);

/// Everything an author writes in one revision of a rule. Each field is already a parsed value; the one
/// rule that spans fields (triggers only on the project layer) is checked by the aggregate and reported as
/// [`RuleError::TriggersOnlyForProjectLayer`](super::RuleError::TriggersOnlyForProjectLayer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleSpec {
    /// The rule's name.
    pub name: RuleName,
    /// What the rule is for, shown in the library.
    #[serde(default)]
    pub description: Description,
    /// The managed section the rule belongs to; fixed for the life of the rule.
    pub layer: Layer,
    /// The Markdown rendered into the managed section.
    pub content: RuleContent,
    /// The heading the rule is rendered under, if any.
    #[serde(default)]
    pub category: Option<Category>,
    /// Higher is rendered first within a category.
    #[serde(default)]
    pub priority: i32,
    /// Free tags for searching the library; a set, so duplicates cannot occur.
    #[serde(default)]
    pub tags: BTreeSet<Tag>,
    /// Path globs a project-layer rule applies to; empty means "the whole project". Must be empty for the
    /// organization and team layers.
    #[serde(default)]
    pub triggers: Vec<PathGlob>,
}

/// How many distinct approvals a rule revision needs before it is in force, per layer. The default is
/// organization 2, team 1, project 1; an installation may configure other numbers (at least 1 each).
/// The application looks the quorum up and passes it in
/// [`RuleCommand::ApproveRule`](super::RuleCommand::ApproveRule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ApprovalQuorum {
    organization: NonZeroU32,
    team: NonZeroU32,
    project: NonZeroU32,
}

impl Default for ApprovalQuorum {
    fn default() -> Self {
        Self {
            organization: NonZeroU32::MIN.saturating_add(1),
            team: NonZeroU32::MIN,
            project: NonZeroU32::MIN,
        }
    }
}

impl ApprovalQuorum {
    /// Builds a quorum from the number of approvals each layer needs.
    ///
    /// # Errors
    /// [`ValueError::OutOfRange`] when any number is 0 (a rule would be in force without review).
    pub fn parse(organization: u32, team: u32, project: u32) -> Result<Self, ValueError> {
        let field = |field: &'static str, n: u32| {
            NonZeroU32::new(n).ok_or(ValueError::OutOfRange {
                field,
                min: 1,
                max: u64::from(u32::MAX),
                actual: 0,
            })
        };
        Ok(Self {
            organization: field("organization_quorum", organization)?,
            team: field("team_quorum", team)?,
            project: field("project_quorum", project)?,
        })
    }

    /// The number of approvals a revision of a rule on `layer` needs.
    pub fn for_layer(&self, layer: Layer) -> NonZeroU32 {
        match layer {
            Layer::Organization => self.organization,
            Layer::Team => self.team,
            Layer::Project => self.project,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::LengthUnit;
    use proptest::prelude::*;

    #[test]
    fn rule_name_is_trimmed() {
        assert_eq!(
            RuleName::parse("  No secrets in code ").unwrap().as_str(),
            "No secrets in code"
        );
    }

    #[test]
    fn blank_rule_name_is_rejected() {
        assert_eq!(
            RuleName::parse("   "),
            Err(ValueError::Empty { field: "name" })
        );
    }

    #[test]
    fn rule_name_may_have_200_characters_but_not_201() {
        assert!(RuleName::parse(&"ü".repeat(200)).is_ok());
        assert_eq!(
            RuleName::parse(&"ü".repeat(201)),
            Err(ValueError::TooLong {
                field: "name",
                max: 200,
                actual: 201,
                unit: LengthUnit::Characters
            })
        );
    }

    #[test]
    fn description_may_be_empty_but_not_longer_than_2000_characters() {
        assert_eq!(Description::parse("  ").unwrap().as_str(), "");
        assert!(Description::parse(&"x".repeat(2000)).is_ok());
        assert!(matches!(
            Description::parse(&"x".repeat(2001)),
            Err(ValueError::TooLong {
                field: "description",
                ..
            })
        ));
    }

    #[test]
    fn rule_content_is_kept_verbatim() {
        let markdown = "- Use `cargo fmt`\n- Never commit secrets\n";
        assert_eq!(RuleContent::parse(markdown).unwrap().as_str(), markdown);
    }

    #[test]
    fn blank_rule_content_is_rejected() {
        assert_eq!(
            RuleContent::parse("\n \n"),
            Err(ValueError::Empty { field: "content" })
        );
    }

    #[test]
    fn rule_content_is_limited_to_64_kib() {
        assert!(RuleContent::parse(&"a".repeat(65_536)).is_ok());
        assert_eq!(
            RuleContent::parse(&"a".repeat(65_537)),
            Err(ValueError::TooLong {
                field: "content",
                max: 65_536,
                actual: 65_537,
                unit: LengthUnit::Bytes
            })
        );
    }

    #[test]
    fn category_is_trimmed_and_limited_to_100_characters() {
        assert_eq!(Category::parse(" Security ").unwrap().as_str(), "Security");
        assert_eq!(
            Category::parse(""),
            Err(ValueError::Empty { field: "category" })
        );
        assert!(Category::parse(&"c".repeat(101)).is_err());
    }

    #[test]
    fn tag_accepts_lowercase_digits_underscore_and_dash() {
        for ok in ["rust", "2fa", "coding_standards", "ci-cd", &"a".repeat(50)] {
            assert_eq!(Tag::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn tag_rejects_uppercase_leading_punctuation_spaces_and_length() {
        assert_eq!(Tag::parse(""), Err(ValueError::Empty { field: "tag" }));
        for bad in ["Rust", "-x", "_x", "a b", "é", "a.b"] {
            assert!(
                matches!(
                    Tag::parse(bad),
                    Err(ValueError::Malformed { field: "tag", .. })
                ),
                "{bad} was accepted"
            );
        }
        assert!(matches!(
            Tag::parse(&"a".repeat(51)),
            Err(ValueError::TooLong { field: "tag", .. })
        ));
    }

    #[test]
    fn path_glob_accepts_globs() {
        for ok in ["src/**/*.rs", "*.md", "docs/{a,b}/*", "Cargo.toml"] {
            assert_eq!(PathGlob::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn path_glob_rejects_invalid_globs() {
        for bad in ["src/[a", "{a,b", "[z-a]", "a}"] {
            assert!(
                matches!(
                    PathGlob::parse(bad),
                    Err(ValueError::Malformed {
                        field: "trigger",
                        ..
                    })
                ),
                "{bad} was accepted"
            );
        }
    }

    #[test]
    fn path_glob_rejects_empty_nul_and_overlong_input() {
        assert_eq!(
            PathGlob::parse(""),
            Err(ValueError::Empty { field: "trigger" })
        );
        assert_eq!(
            PathGlob::parse("a\0b"),
            Err(ValueError::ContainsNul { field: "trigger" })
        );
        assert!(PathGlob::parse(&"a".repeat(512)).is_ok());
        assert!(matches!(
            PathGlob::parse(&"a".repeat(513)),
            Err(ValueError::TooLong { .. })
        ));
    }

    #[test]
    fn default_quorum_is_two_for_organization_and_one_elsewhere() {
        let quorum = ApprovalQuorum::default();
        assert_eq!(quorum.for_layer(Layer::Organization).get(), 2);
        assert_eq!(quorum.for_layer(Layer::Team).get(), 1);
        assert_eq!(quorum.for_layer(Layer::Project).get(), 1);
    }

    #[test]
    fn quorum_can_be_configured_per_layer() {
        let quorum = ApprovalQuorum::parse(3, 2, 1).unwrap();
        assert_eq!(quorum.for_layer(Layer::Organization).get(), 3);
        assert_eq!(quorum.for_layer(Layer::Team).get(), 2);
        assert_eq!(quorum.for_layer(Layer::Project).get(), 1);
    }

    #[test]
    fn a_quorum_of_zero_is_rejected() {
        assert!(matches!(
            ApprovalQuorum::parse(2, 0, 1),
            Err(ValueError::OutOfRange {
                field: "team_quorum",
                ..
            })
        ));
    }

    /// Whether `s` matches `[a-z0-9][a-z0-9_-]{0,49}`, written independently of `Tag::parse`.
    fn in_tag_language(s: &str) -> bool {
        let bytes = s.as_bytes();
        let head = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        !bytes.is_empty()
            && bytes.len() <= 50
            && s.is_ascii()
            && head(bytes[0])
            && bytes[1..]
                .iter()
                .all(|&b| head(b) || b == b'_' || b == b'-')
    }

    proptest! {
        #[test]
        fn tag_parse_accepts_exactly_the_documented_alphabet(input in "[a-zA-Z0-9_ .é-]{0,55}") {
            prop_assert_eq!(Tag::parse(&input).is_ok(), in_tag_language(&input));
        }

        #[test]
        fn tag_parse_accepts_every_word_of_the_language(input in "[a-z0-9][a-z0-9_-]{0,49}") {
            prop_assert_eq!(Tag::parse(&input).map(|t| t.as_str().to_owned()), Ok(input));
        }

        #[test]
        fn rule_name_parse_never_panics(input in any::<String>()) {
            match RuleName::parse(&input) {
                Ok(name) => {
                    prop_assert_eq!(name.as_str(), input.trim());
                    prop_assert!((1..=200).contains(&name.as_str().chars().count()));
                }
                Err(err) => {
                    let expected = matches!(
                        err,
                        ValueError::Empty { field: "name" } | ValueError::TooLong { field: "name", .. }
                    );
                    prop_assert!(expected, "unexpected error {:?}", err);
                }
            }
        }

        #[test]
        fn path_glob_parse_never_panics_and_keeps_its_promises(input in any::<String>()) {
            if let Ok(glob) = PathGlob::parse(&input) {
                prop_assert_eq!(glob.as_str(), input.as_str());
                prop_assert!(!glob.as_str().contains('\0'));
                prop_assert!(glob.as_str().chars().count() <= PathGlob::MAX_CHARS);
            }
        }
    }
}
