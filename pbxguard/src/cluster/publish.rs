//! Keeps this node's subjects on the stream saying what its ledger says. The source of
//! truth is the ledger's bans (journal-backed), read from the engine's snapshot; what the
//! stream holds is read back on every (re)connection. The difference is published: a ban
//! for every shared ban the stream lacks or has older, an unban for every ban the stream
//! still shows that was lifted (an expiry needs no message: every node expires on time).

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, SystemTime},
};

use async_nats::jetstream::{self, consumer::pull};
use futures_util::StreamExt as _;
use ipnet::IpNet;

use super::{ClusterError, Link, consume::Consumer, wire};
use crate::{config::Share, engine::peer::is_peer_ban, store::BanRecord};

/// Publishes in flight before their acks are awaited.
const CHUNK: usize = 1000;
/// How often long bans are checked for republishing before the stream ages them out.
const REFRESH: Duration = Duration::from_secs(60);

/// This node's latest ban message for one network, as the stream holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnStream {
    /// The ban's creation time, as published.
    pub created: SystemTime,
    /// The ban's expiry, as published.
    pub expires: Option<SystemTime>,
    /// When the message was stored.
    pub published: SystemTime,
}

/// What to send to bring the stream in line with the ledger.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Messages to publish, bans and unbans.
    pub send: Vec<wire::Wire>,
    /// Networks whose ban ended on its own: nothing to send, just stop tracking.
    pub forget: Vec<IpNet>,
}

/// Whether this node shares `record` under `publish` (peers' bans never go back out).
pub fn shares(record: &BanRecord, publish: &[Share]) -> bool {
    if is_peer_ban(record) {
        return false;
    }
    let kind = if record.source == "manual" {
        Share::Manual
    } else {
        Share::Detected
    };
    publish.contains(&kind)
}

/// The messages that make the stream match `bans` (already filtered to what is shared).
/// A ban whose message is older than half of `max_age` (0: no limit) is sent again, so a
/// ban longer than the stream's retention never ages out of it.
pub fn plan<'a>(
    node: &str,
    bans: impl IntoIterator<Item = &'a BanRecord>,
    on_stream: &BTreeMap<IpNet, OnStream>,
    now: SystemTime,
    max_age: Duration,
) -> Plan {
    let mut plan = Plan::default();
    let mut wanted = BTreeMap::new();
    for ban in bans.into_iter().filter(|b| !b.is_expired(now)) {
        wanted.insert(ban.net, ban);
        let stale = |held: &OnStream| {
            !max_age.is_zero()
                && now.duration_since(held.published).unwrap_or_default() > max_age / 2
        };
        match on_stream.get(&ban.net) {
            Some(held)
                if held.created == ban.created && held.expires == ban.expires && !stale(held) => {}
            _ => plan.send.push(wire::Wire::ban(node, ban)),
        }
    }
    for (net, held) in on_stream {
        if wanted.contains_key(net) {
            continue;
        }
        if held.expires.is_some_and(|t| t <= now) {
            plan.forget.push(*net);
        } else {
            plan.send.push(wire::Wire::unban(node, *net, now));
        }
    }
    plan
}

/// Reads back this node's latest message per network (bans only: an unban is the absence
/// of a ban).
pub(super) async fn read_back(
    stream: &jetstream::stream::Stream,
    node: &str,
) -> Result<BTreeMap<IpNet, OnStream>, ClusterError> {
    let consumer = stream
        .create_consumer(pull::Config {
            filter_subject: wire::node_subjects(node),
            deliver_policy: jetstream::consumer::DeliverPolicy::LastPerSubject,
            ack_policy: jetstream::consumer::AckPolicy::None,
            inactive_threshold: Duration::from_secs(60),
            ..Default::default()
        })
        .await
        .map_err(ClusterError::nats)?;
    let mut held = BTreeMap::new();
    loop {
        let mut batch = consumer
            .fetch()
            .max_messages(CHUNK)
            .messages()
            .await
            .map_err(ClusterError::nats)?;
        let mut count = 0;
        while let Some(message) = batch.next().await {
            let message = message.map_err(ClusterError::nats)?;
            count += 1;
            let published = message
                .info()
                .map(|i| SystemTime::from(i.published))
                .unwrap_or_else(|_| SystemTime::now());
            match wire::parse(message.subject.as_str(), &message.payload) {
                Ok(w) if w.node == node && w.op == wire::Op::Ban => {
                    held.insert(
                        w.net,
                        OnStream {
                            created: w.at,
                            expires: w.expires,
                            published,
                        },
                    );
                }
                Ok(w) if w.node == node => {
                    held.remove(&w.net);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(subject = %message.subject, error = %e, "unreadable message on this node's own subject; it will be replaced");
                }
            }
        }
        if count == 0 {
            break;
        }
    }
    Ok(held)
}

/// The publishing half of a session.
pub(super) struct Publisher {
    on_stream: BTreeMap<IpNet, OnStream>,
    seen: Option<Arc<Vec<BanRecord>>>,
}

impl Publisher {
    pub(super) fn new(_link: &Link, on_stream: BTreeMap<IpNet, OnStream>) -> Publisher {
        Publisher {
            on_stream,
            seen: None,
        }
    }

    /// Publishes what `bans` and the stream differ by (awaiting every ack); `force`
    /// re-plans even when the bans are the ones last seen (for republishing old messages).
    async fn sync(
        &mut self,
        link: &mut Link,
        js: &jetstream::Context,
        bans: Arc<Vec<BanRecord>>,
        force: bool,
    ) -> Result<(), ClusterError> {
        if !force && self.seen.as_ref().is_some_and(|s| Arc::ptr_eq(s, &bans)) {
            return Ok(());
        }
        let now = SystemTime::now();
        let shared = bans.iter().filter(|b| shares(b, &link.config.publish));
        let plan = plan(&link.node, shared, &self.on_stream, now, link.max_age);
        for net in &plan.forget {
            self.on_stream.remove(net);
        }
        for chunk in plan.send.chunks(CHUNK) {
            let mut acks = Vec::with_capacity(chunk.len());
            for message in chunk {
                let ack = js
                    .publish(
                        wire::subject(&link.node, &message.net),
                        message.to_payload().into(),
                    )
                    .await
                    .map_err(ClusterError::nats)?;
                acks.push((message, ack));
            }
            for (message, ack) in acks {
                ack.await.map_err(ClusterError::nats)?;
                link.status.published += 1;
                match message.op {
                    wire::Op::Ban => {
                        self.on_stream.insert(
                            message.net,
                            OnStream {
                                created: message.at,
                                expires: message.expires,
                                published: now,
                            },
                        );
                        tracing::debug!(net = %message.net, "ban published");
                    }
                    wire::Op::Unban => {
                        self.on_stream.remove(&message.net);
                        tracing::debug!(net = %message.net, "unban published");
                    }
                }
            }
        }
        if !plan.send.is_empty() {
            link.report();
        }
        self.seen = Some(bans);
        Ok(())
    }
}

/// Runs a connected session: catches up, then publishes on every change of the ledger and
/// hands peers' messages to the engine, until NATS fails or the engine stops.
pub(super) async fn follow(
    link: &mut Link,
    js: &jetstream::Context,
    publisher: &mut Publisher,
    consumer: &mut Consumer,
) -> Result<(), ClusterError> {
    let mut snapshots = link.engine.watch();
    let first = snapshots.borrow_and_update().bans.clone();
    publisher.sync(link, js, first, true).await?;
    let mut refresh = tokio::time::interval(REFRESH);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changed = snapshots.changed() => {
                changed.map_err(|_| ClusterError::EngineGone)?;
                let bans = snapshots.borrow_and_update().bans.clone();
                publisher.sync(link, js, bans, false).await?;
            }
            _ = refresh.tick() => {
                let bans = snapshots.borrow().bans.clone();
                publisher.sync(link, js, bans, true).await?;
            }
            first = consumer.next() => {
                let batch = consumer.drain_ready(first?).await;
                consumer.handle(link, batch).await?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::units::parse_net;

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn ban(net: &str, source: &str, expires: Option<u64>) -> BanRecord {
        BanRecord {
            net: parse_net(net).unwrap(),
            reason: "r".into(),
            source: source.into(),
            created: t(0),
            expires: expires.map(t),
            rule: None,
            failures: None,
            offense: None,
            evidence: None,
        }
    }

    fn held(b: &BanRecord, published: u64) -> OnStream {
        OnStream {
            created: b.created,
            expires: b.expires,
            published: t(published),
        }
    }

    #[test]
    fn only_what_publish_names_is_shared_and_never_a_peers_ban() {
        let detected = ban("192.0.2.1", "asterisk", None);
        let manual = ban("192.0.2.2", "manual", None);
        let peer = ban("192.0.2.3", "peer:pbx-b", None);
        assert!(shares(&detected, &[Share::Detected]));
        assert!(!shares(&manual, &[Share::Detected]));
        assert!(shares(&manual, &[Share::Detected, Share::Manual]));
        assert!(!shares(&peer, &[Share::Detected, Share::Manual]));
    }

    #[test]
    fn the_plan_sends_new_bans_unbans_lifted_ones_and_nothing_for_expiries() {
        let now = t(100);
        let kept = ban("192.0.2.1", "asterisk", Some(1000));
        let new = ban("192.0.2.2", "asterisk", Some(1000));
        let lifted = ban("192.0.2.3", "asterisk", Some(1000));
        let ended = ban("192.0.2.4", "asterisk", Some(50));
        let on_stream: BTreeMap<_, _> = [&kept, &lifted, &ended]
            .into_iter()
            .map(|b| (b.net, held(b, 0)))
            .collect();
        let plan = plan("a", [&kept, &new], &on_stream, now, Duration::ZERO);
        let sent: Vec<(wire::Op, String)> = plan
            .send
            .iter()
            .map(|w| (w.op, w.net.to_string()))
            .collect();
        assert_eq!(
            sent,
            [
                (wire::Op::Ban, "192.0.2.2/32".to_string()),
                (wire::Op::Unban, "192.0.2.3/32".to_string())
            ]
        );
        assert_eq!(plan.forget, [ended.net]);
    }

    #[test]
    fn a_longer_ban_is_republished_and_old_messages_refreshed() {
        let now = t(1000);
        let mut longer = ban("192.0.2.1", "asterisk", Some(5000));
        let on_stream: BTreeMap<_, _> = [(longer.net, held(&longer, 990))].into();
        longer.expires = Some(t(9000));
        let plan1 = plan("a", [&longer], &on_stream, now, Duration::ZERO);
        assert_eq!(plan1.send.len(), 1);
        // Unchanged but published 600 s ago with a 1000 s stream max age: sent again.
        let permanent = ban("192.0.2.9", "manual", None);
        let on_stream: BTreeMap<_, _> = [(permanent.net, held(&permanent, 400))].into();
        assert_eq!(
            plan(
                "a",
                [&permanent],
                &on_stream,
                now,
                Duration::from_secs(1000)
            )
            .send
            .len(),
            1
        );
        assert!(
            plan(
                "a",
                [&permanent],
                &on_stream,
                now,
                Duration::from_secs(1400)
            )
            .send
            .is_empty()
        );
    }
}
