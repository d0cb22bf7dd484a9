//! The rule catalog's filters (layer, tag, text), matched against its documents.

use serde_json::Value;

/// Filters of the rule catalog.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleQuery {
    /// `draft`, `pending`, `approved`, `rejected` or `archived`.
    pub status: Option<String>,
    /// `organization`, `team` or `project`.
    pub layer: Option<String>,
    /// A tag the rule carries.
    pub tag: Option<String>,
    /// Case-insensitive text in name, description, content or tags.
    pub text: Option<String>,
}

impl RuleQuery {
    /// Whether a rule-catalog document matches the filters other than status.
    pub fn matches(&self, doc: &Value) -> bool {
        if let Some(layer) = &self.layer
            && doc["layer"].as_str() != Some(layer.as_str())
        {
            return false;
        }
        let tags: Vec<&str> = doc["tags"]
            .as_array()
            .map(|tags| tags.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if let Some(tag) = &self.tag
            && !tags.contains(&tag.as_str())
        {
            return false;
        }
        if let Some(text) = &self.text {
            let needle = text.to_lowercase();
            let found = ["name", "description", "content"]
                .iter()
                .filter_map(|field| doc[*field].as_str())
                .chain(tags.iter().copied())
                .any(|haystack| haystack.to_lowercase().contains(&needle));
            if !found {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::RuleQuery;
    use serde_json::json;

    #[test]
    fn rule_query_filters_by_layer_tag_and_text() {
        let doc = json!({"layer": "team", "tags": ["security"], "name": "No Secrets", "description": "", "content": "never paste keys"});
        assert!(RuleQuery::default().matches(&doc));
        assert!(
            RuleQuery {
                layer: Some("team".into()),
                ..Default::default()
            }
            .matches(&doc)
        );
        assert!(
            !RuleQuery {
                layer: Some("project".into()),
                ..Default::default()
            }
            .matches(&doc)
        );
        assert!(
            RuleQuery {
                tag: Some("security".into()),
                ..Default::default()
            }
            .matches(&doc)
        );
        assert!(
            !RuleQuery {
                tag: Some("testing".into()),
                ..Default::default()
            }
            .matches(&doc)
        );
        assert!(
            RuleQuery {
                text: Some("secrets".into()),
                ..Default::default()
            }
            .matches(&doc)
        );
        assert!(
            RuleQuery {
                text: Some("PASTE".into()),
                ..Default::default()
            }
            .matches(&doc)
        );
        assert!(
            !RuleQuery {
                text: Some("tests".into()),
                ..Default::default()
            }
            .matches(&doc)
        );
    }
}
