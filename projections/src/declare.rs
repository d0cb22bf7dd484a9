//! The `projection!` macro: declares a projection's unit type and its [`Projection`](crate::Projection)
//! impl, its name, the aggregates it follows and the function that applies their decoded events.

/// Declares `$projection` (named `$name`), which follows the aggregates `$follows` (variants of
/// [`AggregateType`](crate::decode::AggregateType)) and applies each event with
/// `$apply(decoded, event, docs)`, `decoded` being the event decoded when it is of one of them.
macro_rules! projection {
    ($(#[$doc:meta])* $projection:ident, $name:literal, [$($follows:ident),*], $apply:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default)]
        pub struct $projection;

        #[async_trait::async_trait]
        impl $crate::Projection for $projection {
            fn name(&self) -> &'static str {
                $name
            }

            fn follows(&self) -> &'static [&'static str] {
                &[$(stringify!($follows)),*]
            }

            async fn apply(
                &self,
                event: &$crate::RecordedEvent,
                docs: &mut $crate::Docs<'_>,
            ) -> Result<(), $crate::ProjectionError> {
                let followed = [$($crate::decode::AggregateType::$follows),*];
                $apply($crate::decode::decode_followed(event, &followed)?, event, docs).await
            }
        }
    };
}
