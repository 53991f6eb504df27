//! The block-hash window every reorg-aware source keeps: the hashes of the last stored
//! heights, and the common-ancestor search over them. Pure: the node is asked through a
//! closure, so the search is tested without a network.

use std::collections::BTreeMap;
use std::future::Future;

/// Recent (height, hash) pairs of the stored best chain; heights may be sparse.
#[derive(Debug, Clone)]
pub struct HashWindow {
    capacity: usize,
    hashes: BTreeMap<u64, String>,
}

/// How a common-ancestor search ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ancestor {
    /// The highest stored height whose hash the node still has.
    Found(u64),
    /// No height of the window is canonical any more: the reorg is deeper than the window.
    BelowWindow,
}

impl HashWindow {
    /// A window keeping at most `capacity` heights.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            hashes: BTreeMap::new(),
        }
    }

    /// Records `hash` at `height`; anything stored above `height` belongs to another branch
    /// and is dropped. The oldest heights go when the window is full.
    pub fn push(&mut self, height: u64, hash: impl Into<String>) {
        self.truncate_above(height.saturating_sub(1));
        self.hashes.insert(height, hash.into());
        while self.hashes.len() > self.capacity {
            self.hashes.pop_first();
        }
    }

    /// Drops every height above `height`.
    pub fn truncate_above(&mut self, height: u64) {
        let _ = self.hashes.split_off(&(height + 1));
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.hashes.clear();
    }

    /// The stored hash at `height`.
    pub fn get(&self, height: u64) -> Option<&str> {
        self.hashes.get(&height).map(String::as_str)
    }

    /// The highest stored height and its hash.
    pub fn tip(&self) -> Option<(u64, &str)> {
        self.hashes.last_key_value().map(|(h, s)| (*h, s.as_str()))
    }

    /// The lowest stored height.
    pub fn oldest(&self) -> Option<u64> {
        self.hashes.first_key_value().map(|(h, _)| *h)
    }

    /// Number of heights held.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Whether a block whose parent is `parent_hash` at `height` extends the stored tip.
    /// True when the tip is not directly below (nothing to compare).
    pub fn extends(&self, height: u64, parent_hash: &str) -> bool {
        match self.tip() {
            Some((tip, hash)) if tip + 1 == height => hash == parent_hash,
            _ => true,
        }
    }

    /// Heights to probe, highest first, strictly below `below` (all when `None`), at most `n`.
    fn probe(&self, below: Option<u64>, n: usize) -> Vec<u64> {
        let upper = below.unwrap_or(u64::MAX);
        self.hashes
            .range(..upper)
            .rev()
            .take(n)
            .map(|(h, _)| *h)
            .collect()
    }

    /// Searches the window from the top, `page` heights per call of `canonical` (which
    /// returns the node's hash at each asked height, `None` where it has no block), for the
    /// highest height whose stored hash is still canonical.
    pub async fn find_ancestor<F, Fut, E>(
        &self,
        page: usize,
        mut canonical: F,
    ) -> Result<Ancestor, E>
    where
        F: FnMut(Vec<u64>) -> Fut,
        Fut: Future<Output = Result<Vec<Option<String>>, E>>,
    {
        let mut below = None;
        loop {
            let heights = self.probe(below, page.max(1));
            let Some(&lowest) = heights.last() else {
                return Ok(Ancestor::BelowWindow);
            };
            let answers = canonical(heights.clone()).await?;
            for (h, node) in heights.iter().zip(answers) {
                if node.as_deref().is_some_and(|n| Some(n) == self.get(*h)) {
                    return Ok(Ancestor::Found(*h));
                }
            }
            below = Some(lowest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(pairs: &[(u64, &str)]) -> HashWindow {
        let mut w = HashWindow::new(100);
        for (h, s) in pairs {
            w.push(*h, *s);
        }
        w
    }

    /// A node whose chain has `ours` up to `fork` and other hashes above it.
    fn node(
        w: &HashWindow,
        fork: u64,
    ) -> impl FnMut(Vec<u64>) -> std::future::Ready<Result<Vec<Option<String>>, ()>> + '_ {
        move |hs: Vec<u64>| {
            std::future::ready(Ok(hs
                .iter()
                .map(|h| {
                    Some(if *h <= fork {
                        w.get(*h).unwrap_or("?").to_string()
                    } else {
                        format!("other{h}")
                    })
                })
                .collect()))
        }
    }

    #[tokio::test]
    async fn finds_the_highest_canonical_height_across_pages() {
        let pairs: Vec<(u64, String)> = (1..=50).map(|h| (h, format!("h{h}"))).collect();
        let mut w = HashWindow::new(100);
        for (h, s) in &pairs {
            w.push(*h, s.clone());
        }
        let mut calls = 0;
        let mut inner = node(&w, 37);
        let found = w
            .find_ancestor(4, |hs| {
                calls += 1;
                inner(hs)
            })
            .await
            .unwrap();
        assert_eq!(found, Ancestor::Found(37));
        assert_eq!(calls, 4, "50..47, 46..43, 42..39, 38..35");
    }

    #[tokio::test]
    async fn sparse_windows_and_deep_reorgs() {
        let w = window(&[(10, "a"), (20, "b"), (30, "c")]);
        assert_eq!(
            w.find_ancestor(2, node(&w, 25)).await.unwrap(),
            Ancestor::Found(20)
        );
        assert_eq!(
            w.find_ancestor(2, node(&w, 5)).await.unwrap(),
            Ancestor::BelowWindow
        );
        let missing = |hs: Vec<u64>| std::future::ready(Ok::<_, ()>(vec![None; hs.len()]));
        assert_eq!(
            w.find_ancestor(8, missing).await.unwrap(),
            Ancestor::BelowWindow
        );
    }

    #[test]
    fn push_replaces_a_branch_and_keeps_the_capacity() {
        let mut w = HashWindow::new(3);
        for h in 1..=5 {
            w.push(h, format!("h{h}"));
        }
        assert_eq!(w.len(), 3);
        assert_eq!(w.get(2), None);
        assert_eq!(w.tip(), Some((5, "h5")));
        w.push(4, "x4");
        assert_eq!(w.tip(), Some((4, "x4")));
        assert_eq!(w.get(5), None);
        assert!(w.extends(5, "x4"));
        assert!(!w.extends(5, "h4"));
        assert!(w.extends(9, "anything"), "not adjacent: nothing to compare");
        w.truncate_above(3);
        assert_eq!(w.tip(), Some((3, "h3")));
    }
}
