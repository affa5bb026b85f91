//! One intake layer for every long-lived pull on a durable consumer: the orchestrator's
//! command and report inputs and each edge's own work. It binds (creating the durable where
//! the puller owns it), holds one pull with an idle heartbeat, gathers what has already
//! arrived, and binds again, after a pause that resets once a pull has worked, whenever the
//! pull breaks: the consumer deleted, its leader lost, the server restarted, the heartbeat
//! missed. A pull that ends is an event ([`Pulled::Unbound`]) the caller sees, never a
//! stream that silently stops yielding.

use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{DeliverPolicy, PullConsumer, pull},
};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};

use crate::backoff::Backoff;
use crate::topology::StreamKind;

/// How an intake finds its consumer.
#[derive(Clone, Debug)]
pub enum Binding {
    /// Binds to an existing consumer, never creating it: an edge pulls only from the
    /// consumer the orchestrator made for it.
    Existing,
    /// Creates the consumer with this configuration when it is missing: the orchestrator's
    /// own input consumers.
    Create(Box<pull::Config>),
}

/// What a call to [`Intake::next`] brought.
// Nearly every call brings a message: boxing it would allocate per message for the sake of
// the rare variants.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Pulled {
    /// The pull is (again) established; `pending` messages waited on the consumer then.
    Bound { pending: u64 },
    /// A message.
    Message(jetstream::Message),
    /// No pull, for `reason`; the next call binds again. `lost` when an established pull
    /// broke, false when a bind failed (the next call pauses first).
    Unbound { reason: crate::Error, lost: bool },
}

/// A durable pull that rebinds itself.
pub struct Intake {
    js: jetstream::Context,
    kind: StreamKind,
    consumer: String,
    binding: Binding,
    batch: usize,
    messages: Option<pull::Stream>,
    /// Why the pull broke while gathering, to report on the next call.
    broken: Option<String>,
    /// When the next bind may start, after one failed: a deadline, not a sleep, so a
    /// caller that drops `next` (another `select!` branch won) does not restart the pause.
    retry_at: Option<tokio::time::Instant>,
    /// A bind under way, kept across dropped calls so it finishes however often the
    /// caller's `select!` is woken by something else.
    binding_now: Option<BoxFuture<'static, crate::Result<(pull::Stream, u64)>>>,
    /// Where a consumer this intake creates starts, if set (see [`Intake::recreate_from`]).
    start: Option<u64>,
    backoff: Backoff,
    /// When the current pull was bound, and whether it has delivered since: a pull that
    /// delivered, or held for [`Intake::STEADY`], was a success, and the pause before the
    /// next bind starts over from [`Intake::FIRST_PAUSE`]. One that breaks at once (a
    /// consumer that exists but has no leader yet) makes the pauses grow instead of
    /// binding again in a tight loop.
    bound_at: Option<tokio::time::Instant>,
    delivered: bool,
}

impl Intake {
    /// The first pause after a failed bind, doubling up to [`Intake::MAX_PAUSE`].
    pub const FIRST_PAUSE: Duration = Duration::from_millis(50);
    pub const MAX_PAUSE: Duration = Duration::from_secs(2);
    /// The server's idle heartbeat on the pull: a silent pull is noticed within two.
    pub const HEARTBEAT: Duration = Duration::from_secs(5);
    /// How long a pull must hold, delivering nothing, to count as a success.
    pub const STEADY: Duration = Duration::from_secs(10);

    /// An intake on `consumer` of `kind`'s stream, pulling up to `batch` messages at once.
    /// Nothing is requested before the first [`Intake::next`].
    pub fn new(
        js: jetstream::Context,
        kind: StreamKind,
        consumer: impl Into<String>,
        binding: Binding,
        batch: usize,
    ) -> Self {
        Self {
            js,
            kind,
            consumer: consumer.into(),
            binding,
            batch,
            messages: None,
            broken: None,
            retry_at: None,
            binding_now: None,
            start: None,
            backoff: Backoff::new(Self::FIRST_PAUSE, Self::MAX_PAUSE),
            bound_at: None,
            delivered: false,
        }
    }

    /// A consumer this intake has to create from now on starts at stream sequence `seq`,
    /// not at the stream's first message: the caller has taken everything before it. A
    /// consumer that still exists is bound as it is.
    pub fn recreate_from(&mut self, seq: u64) {
        self.start = Some(seq);
    }

    pub fn is_bound(&self) -> bool {
        self.messages.is_some() && self.broken.is_none()
    }

    /// The next thing that happened: a message, the pull established, or the pull broken.
    /// Never ends. Cancel-safe, as a `select!` branch must be: a bind under way and the
    /// pause before one go on from where they were, and a message not yet yielded stays
    /// with the pull.
    pub async fn next(&mut self) -> Pulled {
        if let Some(reason) = self.broken.take() {
            self.lost_pull();
            return Pulled::Unbound {
                reason: self.broke(reason),
                lost: true,
            };
        }
        let Some(messages) = self.messages.as_mut() else {
            if let Some(at) = self.retry_at {
                tokio::time::sleep_until(at).await;
            }
            let bind = self.binding_now.get_or_insert_with(|| {
                Box::pin(bind(
                    self.js.clone(),
                    self.kind,
                    self.consumer.clone(),
                    self.binding.clone(),
                    self.start,
                    self.batch,
                    Self::HEARTBEAT,
                ))
            });
            let bound = bind.await;
            self.binding_now = None;
            return match bound {
                Ok((messages, pending)) => {
                    self.retry_at = None;
                    self.bound_at = Some(tokio::time::Instant::now());
                    self.delivered = false;
                    self.messages = Some(messages);
                    Pulled::Bound { pending }
                }
                Err(reason) => {
                    self.retry_at = Some(tokio::time::Instant::now() + self.backoff.next_delay());
                    Pulled::Unbound {
                        reason,
                        lost: false,
                    }
                }
            };
        };
        match messages.next().await {
            Some(Ok(message)) => {
                self.delivered = true;
                Pulled::Message(message)
            }
            Some(Err(e)) => {
                self.lost_pull();
                Pulled::Unbound {
                    reason: self.broke(e.to_string()),
                    lost: true,
                }
            }
            None => {
                self.lost_pull();
                Pulled::Unbound {
                    reason: self.broke("the pull ended".to_owned()),
                    lost: true,
                }
            }
        }
    }

    /// Why an established pull broke, as the error it is.
    fn broke(&self, reason: String) -> crate::Error {
        crate::Error::Read {
            stream: format!("{} through consumer {}", self.kind.name(), self.consumer),
            reason,
        }
    }

    /// Drops a broken pull; the next bind waits a pause that starts over after a pull
    /// that worked and grows after one that broke at once.
    fn lost_pull(&mut self) {
        self.messages = None;
        let worked = self.delivered
            || self
                .bound_at
                .take()
                .is_some_and(|at| at.elapsed() >= Self::STEADY);
        if worked {
            self.backoff.reset();
        }
        self.retry_at = Some(tokio::time::Instant::now() + self.backoff.next_delay());
    }

    /// A message that has already arrived, if any; never waits. A broken pull is
    /// remembered and reported by the next [`Intake::next`].
    pub fn ready(&mut self) -> Option<jetstream::Message> {
        if self.broken.is_some() {
            return None;
        }
        let messages = self.messages.as_mut()?;
        // Unconstrained: tokio's cooperative budget would otherwise cut a gathering short.
        match tokio::task::unconstrained(messages.next()).now_or_never() {
            Some(Some(Ok(message))) => {
                self.delivered = true;
                Some(message)
            }
            Some(Some(Err(e))) => {
                self.broken = Some(e.to_string());
                None
            }
            Some(None) => {
                self.broken = Some("the pull ended".to_owned());
                None
            }
            None => None,
        }
    }
}

/// Binds `consumer` on `kind`'s stream (creating it as `binding` says, starting at `start`
/// if set) and opens one long-lived pull on it. Owns what it needs, so a bind under way
/// outlives the call that started it.
async fn bind(
    js: jetstream::Context,
    kind: StreamKind,
    consumer: String,
    binding: Binding,
    start: Option<u64>,
    batch: usize,
    heartbeat: Duration,
) -> crate::Result<(pull::Stream, u64)> {
    let stream = js
        .get_stream_no_info(kind.name())
        .await
        .map_err(|e| crate::Error::Read {
            stream: kind.name().to_owned(),
            reason: e.to_string(),
        })?;
    let unbound = |e: &dyn std::fmt::Display| crate::Error::Consumer {
        consumer: consumer.clone(),
        reason: e.to_string(),
    };
    let pull: PullConsumer = match binding {
        Binding::Existing => stream
            .get_consumer(&consumer)
            .await
            .map_err(|e| unbound(&e))?,
        Binding::Create(config) => {
            let mut config = *config;
            if let Some(start_sequence) = start {
                config.deliver_policy = DeliverPolicy::ByStartSequence { start_sequence };
            }
            stream
                .get_or_create_consumer(&consumer, config)
                .await
                .map_err(|e| unbound(&e))?
        }
    };
    let pending = pull.cached_info().num_pending;
    let messages = pull
        .stream()
        .max_messages_per_batch(batch)
        .heartbeat(heartbeat)
        .messages()
        .await
        .map_err(|e| unbound(&format!("opening the pull: {e}")))?;
    Ok((messages, pending))
}
