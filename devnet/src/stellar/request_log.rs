//! The last Horizon requests the devnet served (path and query), so tests can check what a
//! client asked for, e.g. the `limit` of its pages.

use std::collections::VecDeque;
use std::sync::Mutex;

/// Requests kept; older ones are forgotten.
pub const CAPACITY: usize = 2048;

/// A bounded log of request targets, newest last.
#[derive(Debug, Default)]
pub struct RequestLog {
    entries: Mutex<VecDeque<String>>,
}

impl RequestLog {
    /// Records one request target (`/operations?cursor=0&limit=200`).
    pub fn push(&self, target: String) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() == CAPACITY {
            entries.pop_front();
        }
        entries.push_back(target);
    }

    /// The recorded targets, oldest first.
    pub fn snapshot(&self) -> Vec<String> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }
}

/// The `limit` query parameter of a request target, when it has a numeric one.
pub fn limit_of(target: &str) -> Option<u32> {
    let (_, query) = target.split_once('?')?;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("limit="))
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_and_reads_limits() {
        let log = RequestLog::default();
        for i in 0..CAPACITY + 3 {
            log.push(format!("/operations?cursor={i}&limit=7"));
        }
        let all = log.snapshot();
        assert_eq!(all.len(), CAPACITY);
        assert_eq!(all[0], "/operations?cursor=3&limit=7");
        assert_eq!(limit_of(&all[0]), Some(7));
        assert_eq!(limit_of("/accounts/G1"), None);
        assert_eq!(limit_of("/operations?order=asc"), None);
    }
}
