//! The impls every aggregate and its event share: cqrs-es `Aggregate` and `DomainEvent`, and `Versioned`;
//! `handle` writes the events `decide` returns, `apply` counts the version and hands the event to `evolve`.

/// Implements `Aggregate` (named `$aggregate`, with `Services = ()`) and `Versioned` for `$aggregate`,
/// which has a `version: u64` field, `decide(&self, command) -> Result<_, $error>` and
/// `evolve(&mut self, event)`; `$events` turns what `decide` returns into the events to write.
macro_rules! aggregate {
    ($aggregate:ident, $command:ty, $event:ty, $error:ty, $events:expr) => {
        impl cqrs_es::Aggregate for $aggregate {
            const TYPE: &'static str = stringify!($aggregate);
            type Command = $command;
            type Event = $event;
            type Error = $error;
            type Services = ();

            async fn handle(
                &mut self,
                command: Self::Command,
                _services: &Self::Services,
                sink: &cqrs_es::event_sink::EventSink<Self>,
            ) -> Result<(), Self::Error> {
                for event in ($events)(self.decide(command)?) {
                    sink.write(event, self).await;
                }
                Ok(())
            }

            fn apply(&mut self, event: Self::Event) {
                self.version += 1;
                self.evolve(event);
            }
        }

        impl $crate::Versioned for $aggregate {
            fn version(&self) -> u64 {
                self.version
            }
        }
    };
}

/// Implements `DomainEvent` for `$event`: its type is the variant's name (the tag its JSON carries),
/// its version `"1.0"`.
macro_rules! domain_event {
    ($event:ident: $($variant:ident)*) => {
        impl cqrs_es::DomainEvent for $event {
            fn event_type(&self) -> String {
                match self {
                    $(Self::$variant { .. } => stringify!($variant),)*
                }
                .to_owned()
            }

            fn event_version(&self) -> String {
                "1.0".to_owned()
            }
        }
    };
}
