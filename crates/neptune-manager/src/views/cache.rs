//! What the read path keeps between requests, and why each is safe to keep.
//!
//! - [`Bodies`]: serialised answers, each tagged with the stamp read from
//!   the store before it was built: a VI's revision for its detail (see
//!   [`neptune_store::ViStamp`]), the count and revision total of the VIs
//!   listed for a list (see [`neptune_store::ViListStamp`]). A reader reads
//!   the stamp first (one query on an index; for a detail it also gives the
//!   owner for the authorisation check) and reuses a body only if it was
//!   built at exactly that stamp. The database counts revisions for every
//!   write of a VI, its history, jobs and placement, by any Manager sharing
//!   it, so a reader never gets a body older than a write it could have
//!   observed. Memory is bounded: least recently used bodies go first.
//! - [`NameMap`]: the names of users, datacenters and hosts by id. The store
//!   neither renames nor deletes them (a host registers again under its
//!   name and keeps its id), so an entry never goes stale; an id not yet
//!   known reloads the map.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// Bytes of bodies kept before the least recently used are dropped.
const MAX_BODY_BYTES: usize = 64 << 20;

/// An answer as sent: JSON and its entity tag.
#[derive(Debug, Clone)]
pub(crate) struct Body {
    body: Bytes,
    etag: HeaderValue,
}

impl Body {
    fn new(body: Bytes) -> Body {
        let digest = Sha256::digest(&body);
        let tag: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        let etag = HeaderValue::from_str(&format!("\"{tag}\""))
            .unwrap_or_else(|_| HeaderValue::from_static("\"\""));
        Body { body, etag }
    }

    /// Whether the request's `If-None-Match` names this body's tag.
    pub(crate) fn is_held(&self, request: &HeaderMap) -> bool {
        request
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .any(|v| matches_tag(v, &self.etag))
    }

    /// `304 Not Modified` when the request's `If-None-Match` names this
    /// body's tag, the body otherwise; both carry the tag.
    pub(crate) fn respond(&self, request: &HeaderMap) -> Response {
        if self.is_held(request) {
            return (
                StatusCode::NOT_MODIFIED,
                [(header::ETAG, self.etag.clone())],
            )
                .into_response();
        }
        (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
                (header::ETAG, self.etag.clone()),
            ],
            self.body.clone(),
        )
            .into_response()
    }
}

/// The weak comparison RFC 9110 asks of `If-None-Match`.
fn matches_tag(header: &HeaderValue, etag: &HeaderValue) -> bool {
    let Ok(list) = header.to_str() else {
        return false;
    };
    let ours = etag.to_str().unwrap_or_default();
    list.split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == ours)
}

#[derive(Debug)]
struct Entry<S> {
    stamp: S,
    body: Body,
    last_used: u64,
}

#[derive(Debug)]
struct Kept<K, S> {
    entries: HashMap<K, Entry<S>>,
    bytes: usize,
    clock: u64,
}

/// Serialised answers by key (a VI; a list's owner), each kept with the
/// stamp it was built after.
#[derive(Debug)]
pub(crate) struct Bodies<K, S> {
    kept: Mutex<Kept<K, S>>,
    max_bytes: usize,
}

impl<K: Hash + Eq + Copy, S: Eq + Copy> Default for Bodies<K, S> {
    fn default() -> Self {
        Bodies::with_capacity(MAX_BODY_BYTES)
    }
}

impl<K: Hash + Eq + Copy, S: Eq + Copy> Bodies<K, S> {
    fn with_capacity(max_bytes: usize) -> Bodies<K, S> {
        Bodies {
            kept: Mutex::new(Kept {
                entries: HashMap::new(),
                bytes: 0,
                clock: 0,
            }),
            max_bytes,
        }
    }

    /// The body built at `stamp`, if it is kept.
    pub(crate) fn get(&self, key: K, stamp: S) -> Option<Body> {
        let mut kept = self.kept.lock().ok()?;
        kept.clock += 1;
        let now = kept.clock;
        let entry = kept.entries.get_mut(&key)?;
        if entry.stamp != stamp {
            return None;
        }
        entry.last_used = now;
        Some(entry.body.clone())
    }

    /// Keeps `body`, built from reads made after seeing `stamp`, in place
    /// of whatever was kept for `key`.
    pub(crate) fn put(&self, key: K, stamp: S, body: Bytes) -> Body {
        let body = Body::new(body);
        let size = body.body.len();
        if size > self.max_bytes / 4 {
            return body;
        }
        let Ok(mut kept) = self.kept.lock() else {
            return body;
        };
        kept.clock += 1;
        let entry = Entry {
            stamp,
            body: body.clone(),
            last_used: kept.clock,
        };
        if let Some(old) = kept.entries.insert(key, entry) {
            kept.bytes -= old.body.body.len();
        }
        kept.bytes += size;
        if kept.bytes > self.max_bytes {
            kept.evict(self.max_bytes * 3 / 4);
        }
        body
    }

    /// A body sent without being kept, and whatever was kept for `key`
    /// dropped: for answers that will not be asked for again soon.
    pub(crate) fn pass(&self, key: K, body: Bytes) -> Body {
        if let Ok(mut kept) = self.kept.lock() {
            if let Some(old) = kept.entries.remove(&key) {
                kept.bytes -= old.body.body.len();
                super::shrink_if_sparse(&mut kept.entries);
            }
        }
        Body::new(body)
    }
}

impl<K: Hash + Eq + Copy, S> Kept<K, S> {
    /// Drops the least recently used bodies until at most `target` bytes
    /// remain; evicting down to below the cap keeps this rare.
    fn evict(&mut self, target: usize) {
        let mut by_age: Vec<(u64, K, usize)> = self
            .entries
            .iter()
            .map(|(key, e)| (e.last_used, *key, e.body.body.len()))
            .collect();
        by_age.sort_unstable_by_key(|(used, _, _)| *used);
        for (_, key, size) in by_age {
            if self.bytes <= target {
                break;
            }
            self.entries.remove(&key);
            self.bytes -= size;
        }
        super::shrink_if_sparse(&mut self.entries);
    }
}

/// Names by id of one kind of thing that is never renamed nor deleted.
#[derive(Debug)]
pub(crate) struct NameMap<K>(Mutex<Arc<HashMap<K, String>>>);

impl<K> Default for NameMap<K> {
    fn default() -> Self {
        Self(Mutex::new(Arc::new(HashMap::new())))
    }
}

impl<K: Eq + Hash> NameMap<K> {
    /// The map, if it names every one of `ids`.
    pub(crate) fn covering(
        &self,
        mut ids: impl Iterator<Item = K>,
    ) -> Option<Arc<HashMap<K, String>>> {
        let map = self.0.lock().ok()?.clone();
        ids.all(|id| map.contains_key(&id)).then_some(map)
    }

    /// Replaces the map with one freshly read from the store.
    pub(crate) fn replace(&self, map: HashMap<K, String>) -> Arc<HashMap<K, String>> {
        let map = Arc::new(map);
        if let Ok(mut kept) = self.0.lock() {
            *kept = map.clone();
        }
        map
    }

    /// Adds names read from the store to the map (copied only if a
    /// reader holds it meanwhile).
    pub(crate) fn add(
        &self,
        names: impl IntoIterator<Item = (K, String)>,
    ) -> Arc<HashMap<K, String>>
    where
        K: Clone,
    {
        let Ok(mut kept) = self.0.lock() else {
            return Arc::new(names.into_iter().collect());
        };
        Arc::make_mut(&mut kept).extend(names);
        kept.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn names_added_join_those_kept() {
        let names = NameMap::<Uuid>::default();
        names.replace(HashMap::from([(id(1), "a".to_owned())]));
        let held = names.covering([id(1)].into_iter()).unwrap();
        assert!(names.covering([id(1), id(2)].into_iter()).is_none());
        let now = names.add([(id(2), "b".to_owned())]);
        assert_eq!((now[&id(1)].as_str(), now[&id(2)].as_str()), ("a", "b"));
        assert!(names.covering([id(1), id(2)].into_iter()).is_some());
        // A reader's copy is its own.
        assert_eq!(held.len(), 1);
    }

    #[test]
    fn a_body_serves_only_its_stamp() {
        let c = Bodies::<Uuid, i64>::default();
        c.put(id(1), 3, Bytes::from_static(b"{\"v\":3}"));
        assert_eq!(c.get(id(1), 3).unwrap().body, &b"{\"v\":3}"[..]);
        assert!(c.get(id(1), 4).is_none());
        assert!(c.get(id(1), 2).is_none());
        assert!(c.get(id(2), 3).is_none());
        c.put(id(1), 5, Bytes::from_static(b"{\"v\":5}"));
        assert!(c.get(id(1), 3).is_none());
        assert_eq!(c.get(id(1), 5).unwrap().body, &b"{\"v\":5}"[..]);
    }

    #[test]
    fn a_passed_body_is_not_kept_and_drops_the_kept_one() {
        let c = Bodies::<Uuid, i64>::default();
        c.put(id(1), 3, Bytes::from_static(b"{\"v\":3}"));
        let passed = c.pass(id(1), Bytes::from_static(b"{\"v\":4}"));
        assert_eq!(&passed.body[..], b"{\"v\":4}");
        assert!(c.get(id(1), 3).is_none());
        assert!(c.get(id(1), 4).is_none());
        assert_eq!(c.kept.lock().unwrap().bytes, 0);
    }

    #[test]
    fn memory_is_bounded_and_recent_bodies_stay() {
        let c = Bodies::<Uuid, i64>::with_capacity(1000);
        for n in 0..10 {
            c.put(id(n), 1, Bytes::from(vec![b' '; 100]));
        }
        // Touch the first so it is the most recently used.
        assert!(c.get(id(0), 1).is_some());
        c.put(id(10), 1, Bytes::from(vec![b' '; 100]));
        let kept = c.kept.lock().unwrap();
        assert!(kept.bytes <= 1000);
        assert_eq!(
            kept.bytes,
            kept.entries
                .values()
                .map(|e| e.body.body.len())
                .sum::<usize>()
        );
        assert!(kept.entries.contains_key(&id(0)));
        assert!(kept.entries.contains_key(&id(10)));
        assert!(!kept.entries.contains_key(&id(1)));
        drop(kept);
        // Too large to keep: answered, not kept.
        c.put(id(11), 1, Bytes::from(vec![b' '; 600]));
        assert!(c.get(id(11), 1).is_none());
    }

    #[test]
    fn if_none_match_compares_weakly() {
        let body = Body::new(Bytes::from_static(b"{}"));
        let tag = body.etag.to_str().unwrap().to_owned();
        let respond = |inm: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::IF_NONE_MATCH, HeaderValue::from_str(inm).unwrap());
            body.respond(&h).status()
        };
        assert_eq!(respond(&tag), StatusCode::NOT_MODIFIED);
        assert_eq!(respond(&format!("W/{tag}")), StatusCode::NOT_MODIFIED);
        assert_eq!(respond(&format!("\"x\", {tag}")), StatusCode::NOT_MODIFIED);
        assert_eq!(respond("*"), StatusCode::NOT_MODIFIED);
        assert_eq!(respond("\"other\""), StatusCode::OK);
        assert_eq!(body.respond(&HeaderMap::new()).status(), StatusCode::OK);
    }
}
