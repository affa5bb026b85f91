//! Sweeping acked work out of the assignment shards, where acks do not remove it: on a
//! cluster the shards use limits retention (see [`Topology::assignment_retention`]).
//!
//! Each node consumer's ack floor says up to which stream sequence every message on the
//! node's subject has been acked; everything below it is purged from that subject alone.
//! One consumer list per shard (paged by the server) finds every floor, so a sweep costs
//! a few requests per shard plus one purge per node whose floor moved since the last one,
//! not a request per node. A consumer whose server is down is simply not listed, and is
//! swept once it is back or created again.
//!
//! [`Topology::assignment_retention`]: crate::Topology::assignment_retention

use std::collections::HashMap;

use async_nats::jetstream;
use futures::StreamExt;

use crate::StreamKind;
use crate::subjects;

/// What one sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// Node consumers whose floor was read.
    pub consumers: usize,
    /// Messages purged, over all nodes.
    pub purged: u64,
    /// Requests that got no answer or an error: shards not listed, purges refused. The
    /// next sweep tries them again.
    pub failed: usize,
}

/// Remembers, per node consumer, the floor already swept, so a node whose floor has not
/// moved costs no purge.
#[derive(Debug, Default)]
pub struct Sweeper {
    swept: HashMap<String, u64>,
}

impl Sweeper {
    /// Sweeps every assignment shard once.
    pub async fn sweep(&mut self, js: &jetstream::Context) -> Swept {
        let mut swept = Swept::default();
        for kind in StreamKind::assignments() {
            self.sweep_shard(js, kind, &mut swept).await;
        }
        swept
    }

    async fn sweep_shard(&mut self, js: &jetstream::Context, kind: StreamKind, swept: &mut Swept) {
        let Ok(stream) = js.get_stream_no_info(kind.name()).await else {
            swept.failed += 1;
            return;
        };
        let mut floors = Vec::new();
        let listed = node_consumers(&stream, |info, subject| {
            swept.consumers += 1;
            let floor = info.ack_floor.stream_sequence;
            if floor > self.swept.get(&info.name).copied().unwrap_or(0) {
                floors.push((info.name, subject, floor));
            }
        })
        .await;
        if !listed {
            swept.failed += 1;
        }
        for (name, subject, floor) in floors {
            // Purges the subject's messages below `floor + 1`: the acked ones.
            match stream.purge().filter(&subject).sequence(floor + 1).await {
                Ok(done) => {
                    swept.purged += done.purged;
                    self.swept.insert(name, floor);
                }
                Err(e) => {
                    tracing::debug!(%subject, error = %e, "purging acked work");
                    swept.failed += 1;
                }
            }
        }
    }
}

/// Work stored for nodes and not yet acked, over every assignment shard, as their node
/// consumers count it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Waiting {
    /// Messages on nodes' subjects their consumers have not delivered yet: work for nodes
    /// that are away or busy pulling.
    pub undelivered: u64,
    /// Messages delivered and not yet acked: work an edge holds and has not accepted.
    pub unacked: u64,
    /// Node consumers read.
    pub consumers: usize,
    /// Shards that could not be listed; what they hold is not counted.
    pub failed: usize,
}

/// Counts the work waiting in every assignment shard, a few shards at a time: one
/// consumer list per shard, as a sweep reads.
pub async fn waiting(js: &jetstream::Context) -> Waiting {
    let shards = futures::stream::iter(StreamKind::assignments())
        .map(|kind| async move {
            let mut counted = Waiting::default();
            let Ok(stream) = js.get_stream_no_info(kind.name()).await else {
                counted.failed = 1;
                return counted;
            };
            let listed = node_consumers(&stream, |info, _| {
                counted.consumers += 1;
                counted.undelivered += info.num_pending;
                counted.unacked += u64::try_from(info.num_ack_pending).unwrap_or(0);
            })
            .await;
            counted.failed = usize::from(!listed);
            counted
        })
        .buffer_unordered(8);
    shards
        .fold(Waiting::default(), |total, shard| async move {
            Waiting {
                undelivered: total.undelivered + shard.undelivered,
                unacked: total.unacked + shard.unacked,
                consumers: total.consumers + shard.consumers,
                failed: total.failed + shard.failed,
            }
        })
        .await
}

/// Calls `each` with the info and subject of every node consumer on `stream`'s list;
/// false when the list broke off.
async fn node_consumers(
    stream: &jetstream::stream::Stream<()>,
    mut each: impl FnMut(jetstream::consumer::Info, String),
) -> bool {
    let mut consumers = stream.consumers();
    while let Some(info) = consumers.next().await {
        let info = match info {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "listing consumers");
                return false;
            }
        };
        // Only cairn's own node consumers, each on its node's subject: an operator's
        // consumer on the shard is neither swept by nor counted as a node's.
        let Some(node) = info
            .name
            .strip_prefix("node-")
            .and_then(|id| cairn_shared::NodeId::new(id).ok())
        else {
            continue;
        };
        let subject = subjects::assignments(&node).to_string();
        if info.config.filter_subject != subject {
            continue;
        }
        each(info, subject);
    }
    true
}
