//! Notices a consumer whose group membership stopped settling, so the processor can start a new one.
//!
//! A group handler that stays out of its steady state (joined, assignment taken) after the brokers
//! answer again leaves the processor with no partitions, consuming nothing, for ever: librdkafka
//! issues #2944, #3082 and #3396 report it after coordinator restarts, and in CI a processor's
//! consumer stayed in `query-coord` after a broker restart while the broker answered everyone
//! else. Only a new consumer (a new group member) gets out of it, as a restart of the process
//! would, so the processor starts one itself.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::GroupStatus;

/// How long the group may stay unsettled, with the brokers answering, before the consumer counts
/// as stuck, at the least. Longer than any rebalance outflow itself causes: a revoked partition
/// finishes its batch in well under a second.
pub const GROUP_STALL_LIMIT: Duration = Duration::from_secs(60);

/// What a rebalance may wait beyond a session timeout: the coordinator's own check interval and
/// the rejoin of the members that stayed.
const BEYOND_SESSION: Duration = Duration::from_secs(15);

/// The stall limit for a group whose members' sessions last `session`: a member that died without
/// leaving holds a rebalance until its session expires, which is a wait, not a stall (the 45 s
/// default session keeps the 60 s floor; a session of 120 s makes it 135 s).
pub fn stall_limit(session: Duration) -> Duration {
    GROUP_STALL_LIMIT.max(session + BEYOND_SESSION)
}

/// How often the consume loop asks.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);

/// How long a stalled consumer's probe of the brokers (with a new client) may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The group handler's state as librdkafka's statistics last reported it, for one consumer.
#[derive(Debug)]
pub struct GroupWatch {
    /// How long an episode may last before it counts as a stall (see [`stall_limit`]).
    limit: Duration,
    inner: Mutex<Seen>,
    /// The process's view of its group (for `/readyz` and the gauge), kept in step here.
    status: Arc<GroupStatus>,
}

#[derive(Debug, Default)]
struct Seen {
    /// When the group was first seen unsettled since it was last settled; `None` while settled.
    unsettled_since: Option<Instant>,
    /// The last report, for the log line: `state/join_state`.
    last: String,
}

impl GroupWatch {
    /// Watches a group whose episodes may last `limit`, publishing what it sees to `status`.
    pub fn new(limit: Duration, status: Arc<GroupStatus>) -> Self {
        Self {
            limit,
            inner: Mutex::default(),
            status,
        }
    }

    /// Takes one statistics report: `state` and `join_state` of librdkafka's `cgrp` object.
    pub fn observe(&self, state: &str, join_state: &str, now: Instant) {
        let Ok(mut seen) = self.inner.lock() else {
            return;
        };
        seen.last = format!("{state}/{join_state}");
        if state == "up" && join_state == "steady" {
            seen.unsettled_since = None;
        } else if seen.unsettled_since.is_none() {
            seen.unsettled_since = Some(now);
        }
        let unsettled = seen
            .unsettled_since
            .map_or(Duration::ZERO, |since| now.saturating_duration_since(since));
        drop(seen);
        self.status.unsettled(unsettled);
    }

    /// The processor just took an assignment: the group has settled, whatever the last
    /// statistics said (they come every 5 s, and the assignment callback may have waited out a
    /// Mongo outage meanwhile).
    pub fn assigned(&self) {
        if let Ok(mut seen) = self.inner.lock() {
            seen.unsettled_since = None;
        }
        self.status.joined();
    }

    /// Counts the current episode as starting `now`: after a stall that a new consumer would not
    /// cure (the brokers do not answer anyone), the next look is a whole limit later.
    pub fn restart_episode(&self, now: Instant) {
        if let Ok(mut seen) = self.inner.lock()
            && seen.unsettled_since.is_some()
        {
            seen.unsettled_since = Some(now);
        }
    }

    /// How long the group has been unsettled, and its last reported state, once that reaches
    /// the limit.
    pub fn stalled(&self, now: Instant) -> Option<(Duration, String)> {
        let seen = self.inner.lock().ok()?;
        let since = seen.unsettled_since?;
        let unsettled = now.saturating_duration_since(since);
        (unsettled >= self.limit).then(|| (unsettled, seen.last.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_group_unsettled_for_the_whole_limit_counts_as_stalled() {
        let status = Arc::new(GroupStatus::default());
        let watch = GroupWatch::new(GROUP_STALL_LIMIT, Arc::clone(&status));
        let start = Instant::now();
        assert!(watch.stalled(start).is_none(), "nothing reported yet");
        watch.observe("up", "steady", start);
        assert_eq!(status.unsettled_time(), Duration::ZERO);
        assert!(watch.stalled(start + GROUP_STALL_LIMIT * 2).is_none());
        let lost = start + Duration::from_secs(1);
        watch.observe("wait-broker-transport", "wait-unassign-to-complete", lost);
        // later reports of the same episode do not move its start
        watch.observe("up", "wait-join", lost + Duration::from_secs(30));
        assert_eq!(
            status.unsettled_time(),
            Duration::from_secs(30),
            "published as the episode's length"
        );
        assert!(watch.stalled(lost + GROUP_STALL_LIMIT / 2).is_none());
        let (unsettled, last) = watch
            .stalled(lost + GROUP_STALL_LIMIT)
            .unwrap_or_else(|| panic!("stalled for the limit"));
        assert_eq!(unsettled, GROUP_STALL_LIMIT);
        assert_eq!(last, "up/wait-join");
        // with the brokers down too, the next look is a whole limit later
        let probed = lost + GROUP_STALL_LIMIT;
        watch.restart_episode(probed);
        assert!(watch.stalled(probed + GROUP_STALL_LIMIT / 2).is_none());
        assert!(watch.stalled(probed + GROUP_STALL_LIMIT).is_some());
        // settling once ends the episode
        watch.observe("up", "steady", probed + GROUP_STALL_LIMIT);
        assert!(watch.stalled(probed + GROUP_STALL_LIMIT * 3).is_none());
        watch.restart_episode(probed + GROUP_STALL_LIMIT * 3);
        assert!(
            watch.stalled(probed + GROUP_STALL_LIMIT * 5).is_none(),
            "a settled group has no episode to restart"
        );
    }

    #[test]
    fn an_assignment_ends_the_episode_before_the_statistics_say_so() {
        let status = Arc::new(GroupStatus::default());
        let watch = GroupWatch::new(GROUP_STALL_LIMIT, Arc::clone(&status));
        let start = Instant::now();
        // the assignment callback waited out a long Mongo outage while claiming
        watch.observe("up", "wait-assign-call", start);
        assert!(!status.check().1, "not ready before the first assignment");
        watch.assigned();
        assert_eq!(status.check(), ("ok".to_string(), true));
        assert!(watch.stalled(start + GROUP_STALL_LIMIT * 2).is_none());
        // a later report of an unsettled group starts a new episode from there
        let later = start + GROUP_STALL_LIMIT * 2;
        watch.observe("up", "wait-join", later);
        assert!(watch.stalled(later + GROUP_STALL_LIMIT / 2).is_none());
        assert!(watch.stalled(later + GROUP_STALL_LIMIT).is_some());
    }

    #[test]
    fn a_session_longer_than_the_floor_lengthens_the_limit() {
        assert_eq!(stall_limit(Duration::from_secs(10)), GROUP_STALL_LIMIT);
        assert_eq!(stall_limit(Duration::from_secs(45)), GROUP_STALL_LIMIT);
        let limit = stall_limit(Duration::from_secs(120));
        assert_eq!(limit, Duration::from_secs(135));
        let watch = GroupWatch::new(limit, Arc::default());
        let start = Instant::now();
        watch.observe("up", "wait-join", start);
        assert!(
            watch.stalled(start + Duration::from_secs(120)).is_none(),
            "a rebalance waiting out a dead member's 120 s session is not a stall"
        );
        assert!(watch.stalled(start + limit).is_some());
    }
}
