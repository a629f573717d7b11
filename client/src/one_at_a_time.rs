//! Requests of one kind that go one at a time, the newest wanted next ([`OneAtATime`]): the
//! session's `read` (one key per conversation) and `users_search` (one key, the query).

/// What is wanted of one kind of request and when, and the one on its way.
///
/// Each key is wanted from a time on (its debounce or retry); [`OneAtATime::next`] names the
/// earliest whose time has come, but none while one is on its way: the answer comes first.
/// [`OneAtATime::deadline`] is then no deadline either (nor while the connection is down), as
/// a time already passed that cannot be acted on would wake the adapter over and over. A list,
/// not a map: a few keys are wanted at a time, and each map type is code of its own in the wasm.
#[derive(Debug)]
pub(crate) struct OneAtATime<K> {
    /// Each key wanted, and from when.
    due: Vec<(K, u64)>,
    /// The ack id and key of the request on its way.
    on_its_way: Option<(u64, K)>,
}

impl<K> Default for OneAtATime<K> {
    fn default() -> Self {
        Self {
            due: Vec::new(),
            on_its_way: None,
        }
    }
}

impl<K: Ord + Clone> OneAtATime<K> {
    fn slot(&mut self, key: &K) -> Option<&mut u64> {
        self.due
            .iter_mut()
            .find(|(k, _)| k == key)
            .map(|(_, at)| at)
    }

    /// `key` is wanted at `at`, or sooner if it already was.
    pub fn want_by(&mut self, key: &K, at: u64) {
        match self.slot(key) {
            Some(due) => *due = (*due).min(at),
            None => self.due.push((key.clone(), at)),
        }
    }

    /// `key` is wanted at `at`, no sooner (a retry).
    pub fn want_at(&mut self, key: &K, at: u64) {
        match self.slot(key) {
            Some(due) => *due = at,
            None => self.due.push((key.clone(), at)),
        }
    }

    /// `key` is wanted at `at` unless it already is (then its own time holds).
    pub fn want_unless_wanted(&mut self, key: &K, at: u64) {
        if self.slot(key).is_none() {
            self.due.push((key.clone(), at));
        }
    }

    /// Only `key` is wanted, at `at` (the newest replaces every other).
    pub fn want_only(&mut self, key: &K, at: u64) {
        self.due.clear();
        self.due.push((key.clone(), at));
    }

    /// `key` is no longer wanted.
    pub fn drop_key(&mut self, key: &K) {
        self.due.retain(|(k, _)| k != key);
    }

    /// Nothing is wanted.
    pub fn clear_wanted(&mut self) {
        self.due.clear();
    }

    /// The one on its way will never be answered (its connection is gone without failing it).
    pub fn forget_on_its_way(&mut self) {
        self.on_its_way = None;
    }

    /// The key to ask for now: the earliest wanted whose time has come (of equal times, the
    /// least key), unless one is on its way.
    pub fn next(&self, now: u64) -> Option<&K> {
        if self.on_its_way.is_some() {
            return None;
        }
        self.due
            .iter()
            .filter(|(_, at)| *at <= now)
            .min_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)))
            .map(|(key, _)| key)
    }

    /// When to look again: the earliest time wanted, while a request could go (`online`, and
    /// none on its way).
    pub fn deadline(&self, online: bool) -> Option<u64> {
        if !online || self.on_its_way.is_some() {
            return None;
        }
        self.due.iter().map(|(_, at)| *at).min()
    }

    /// `key` was asked with ack id `id`: no longer wanted, on its way.
    pub fn sent(&mut self, key: K, id: u64) {
        self.drop_key(&key);
        self.on_its_way = Some((id, key));
    }

    /// The answer to ack `id` came (or failed): its key, if it was the one on its way.
    pub fn answered(&mut self, id: u64) -> Option<K> {
        match &self.on_its_way {
            Some((on_its_way, _)) if *on_its_way == id => self.on_its_way.take().map(|(_, k)| k),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::OneAtATime;

    fn key(s: &str) -> String {
        s.to_owned()
    }

    #[test]
    fn the_earliest_due_goes_and_nothing_more_until_it_is_answered() {
        let mut q = OneAtATime::default();
        q.want_by(&key("bob"), 300);
        q.want_by(&key("ann"), 500);
        assert_eq!(q.next(299), None);
        assert_eq!(q.deadline(true), Some(300));
        assert_eq!(q.deadline(false), None, "offline: no deadline");
        assert_eq!(q.next(600), Some(&key("bob")), "the earliest of those due");
        q.sent(key("bob"), 7);
        assert_eq!(q.next(600), None, "one on its way");
        assert_eq!(q.deadline(true), None, "nothing can go: no deadline");
        assert_eq!(q.answered(8), None, "another request's answer");
        assert_eq!(q.answered(7), Some(key("bob")));
        assert_eq!(q.answered(7), None, "answered once");
        assert_eq!(q.next(600), Some(&key("ann")));
        q.sent(key("ann"), 9);
        q.forget_on_its_way();
        assert_eq!(q.next(600), None, "nothing left wanted");
        assert_eq!(q.deadline(true), None, "nothing left wanted");
    }

    #[test]
    fn equal_times_go_by_key() {
        let mut q = OneAtATime::default();
        q.want_by(&key("b"), 5);
        q.want_by(&key("a"), 5);
        assert_eq!(q.next(5), Some(&key("a")));
    }

    #[test]
    fn wanting_again_keeps_the_sooner_time_a_retry_sets_it_and_the_newest_replaces_all() {
        let mut q = OneAtATime::default();
        q.want_by(&key("bob"), 500);
        q.want_by(&key("bob"), 300);
        q.want_by(&key("bob"), 900);
        assert_eq!(q.deadline(true), Some(300), "want_by: the sooner");
        q.want_at(&key("bob"), 1_300);
        assert_eq!(q.deadline(true), Some(1_300), "want_at: the retry's time");
        q.want_unless_wanted(&key("bob"), 0);
        assert_eq!(
            q.deadline(true),
            Some(1_300),
            "already wanted: its time holds"
        );
        q.want_unless_wanted(&key("ann"), 200);
        assert_eq!(q.deadline(true), Some(200));
        q.want_only(&key("cid"), 700);
        assert_eq!(q.next(1_500), Some(&key("cid")), "the others are gone");
        q.drop_key(&key("cid"));
        assert_eq!(q.deadline(true), None, "nothing left wanted");
        q.want_by(&key("dan"), 1);
        q.clear_wanted();
        assert_eq!(q.next(10), None);
    }

    #[test]
    fn a_key_wanted_while_its_request_is_on_its_way_goes_after_the_answer() {
        let mut q = OneAtATime::default();
        q.want_by(&key("bob"), 0);
        q.sent(key("bob"), 1);
        q.want_by(&key("bob"), 300);
        assert_eq!(q.next(300), None);
        assert_eq!(q.answered(1), Some(key("bob")));
        assert_eq!(q.next(299), None);
        assert_eq!(q.next(300), Some(&key("bob")));
    }
}
