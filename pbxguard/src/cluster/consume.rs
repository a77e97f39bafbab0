//! The consuming half of a session: this node's durable consumer on the whole stream. On
//! the first join it delivers every message the stream holds (the latest per node and
//! network), afterwards whatever this node has not acked, then the live flow. Messages are
//! acked only after the engine answered, so a crash or a lost connection redelivers them.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use futures_util::StreamExt as _;

use super::{ClusterError, Link, wire};
use crate::engine::actor::Command;

/// Messages handed to the engine at most at once (one journal write, one kernel batch).
const BATCH: usize = 1000;

/// This node's durable consumer (`pbxguard-<node>`), created on first join.
pub(super) async fn durable(
    stream: &jetstream::stream::Stream,
    node: &str,
) -> Result<jetstream::consumer::PullConsumer, ClusterError> {
    let name = format!("pbxguard-{node}");
    stream
        .get_or_create_consumer(
            &name,
            pull::Config {
                durable_name: Some(name.clone()),
                filter_subject: wire::SUBJECTS.into(),
                deliver_policy: jetstream::consumer::DeliverPolicy::All,
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(60),
                max_ack_pending: 20_000,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| ClusterError::Nats(format!("consumer {name}: {e}")))
}

/// A session's consumer and its message flow.
pub(super) struct Consumer {
    consumer: jetstream::consumer::PullConsumer,
    messages: Option<pull::Stream>,
}

impl Consumer {
    pub(super) fn new(consumer: jetstream::consumer::PullConsumer) -> Consumer {
        Consumer {
            consumer,
            messages: None,
        }
    }

    /// The next message (cancel-safe: nothing is lost if another branch wins the select).
    pub(super) async fn next(&mut self) -> Result<jetstream::Message, ClusterError> {
        if self.messages.is_none() {
            self.messages = Some(self.consumer.messages().await.map_err(ClusterError::nats)?);
        }
        let messages = self.messages.as_mut().expect("just set");
        match messages.next().await {
            Some(message) => message.map_err(ClusterError::nats),
            None => Err(ClusterError::Nats(
                "the consumer's message flow ended".into(),
            )),
        }
    }

    /// `first` and whatever else has already arrived, up to [`BATCH`].
    pub(super) async fn drain_ready(
        &mut self,
        first: jetstream::Message,
    ) -> Vec<jetstream::Message> {
        let mut batch = vec![first];
        let Some(messages) = self.messages.as_mut() else {
            return batch;
        };
        while batch.len() < BATCH {
            match tokio::time::timeout(Duration::ZERO, messages.next()).await {
                Ok(Some(Ok(message))) => batch.push(message),
                _ => break,
            }
        }
        batch
    }

    /// Screens a batch, hands the accepted messages to the engine, then acks them all.
    pub(super) async fn handle(
        &mut self,
        link: &mut Link,
        batch: Vec<jetstream::Message>,
    ) -> Result<(), ClusterError> {
        let mut accepted = Vec::new();
        for message in &batch {
            if let Ok(info) = message.info() {
                link.status.last_sequence = link.status.last_sequence.max(info.stream_sequence);
            }
            let wire = match wire::parse(message.subject.as_str(), &message.payload) {
                Ok(wire) => wire,
                Err(e) => {
                    link.status.malformed += 1;
                    tracing::warn!(subject = %message.subject.as_str().chars().take(200).collect::<String>(),
                        error = %e, "malformed cluster message dropped");
                    continue;
                }
            };
            if wire.node == link.node {
                continue;
            }
            link.status.received += 1;
            let peer = link.status.peers.entry(wire.node.clone()).or_default();
            peer.received += 1;
            if !link.config.accepts(&wire.node) {
                peer.refused += 1;
                link.status.refused += 1;
                tracing::warn!(node = %wire.node, net = %wire.net, "peer's message refused: node not in [cluster] accept_from");
                continue;
            }
            accepted.push(wire);
        }
        if link.config.apply && !accepted.is_empty() {
            let outcome = link
                .engine
                .ask(|reply| Command::Peer(accepted, reply))
                .await
                .map_err(|_| ClusterError::EngineGone)?;
            link.status.applied += outcome.applied as u64;
            for refusal in outcome.refused {
                link.status.refused += 1;
                link.status.peers.entry(refusal.node).or_default().refused += 1;
            }
        }
        for message in &batch {
            message.ack().await.map_err(ClusterError::nats)?;
        }
        link.report();
        Ok(())
    }
}
