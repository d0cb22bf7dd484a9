//! The cqrs-es `Aggregate` and the `Versioned` impls every aggregate shares: `handle` writes the events
//! `decide` returns, `apply` counts the version and hands the event to the aggregate's `evolve`.

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
