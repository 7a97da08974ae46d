//! Patched for libmesh: the message caches give back the room a burst grew.
//!
//! The duplicate cache, the peer-score delivery records and the message cache are hash
//! maps (and a queue) that expire their entries a minute or two after they came. Upstream
//! never shrank them, so a node kept, for its whole life, room for as many messages as
//! its busiest minute ever carried (a swarm's mass join: thousands; the steady state:
//! about a hundred). Once a map holds less than a quarter of its room, and the room is
//! more than [`KEEP`] entries, it is shrunk to twice what it holds: each entry is moved
//! at most once per halving, so the cost stays proportional to the insertions.

use std::{
    collections::{HashMap, VecDeque},
    hash::{BuildHasher, Hash},
};

/// Room no map is shrunk below.
pub(crate) const KEEP: usize = 64;

/// Shrinks `map` to twice its length once it holds under a quarter of its room.
pub(crate) fn shrink_map<K: Eq + Hash, V, S: BuildHasher>(map: &mut HashMap<K, V, S>) {
    if map.capacity() > KEEP && map.len() < map.capacity() / 4 {
        map.shrink_to((map.len() * 2).max(KEEP));
    }
}

/// Shrinks `queue` to twice its length once it holds under a quarter of its room.
pub(crate) fn shrink_deque<T>(queue: &mut VecDeque<T>) {
    if queue.capacity() > KEEP && queue.len() < queue.capacity() / 4 {
        queue.shrink_to((queue.len() * 2).max(KEEP));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_emptied_after_a_burst_gives_its_room_back() {
        let mut map: HashMap<u32, u32> = HashMap::new();
        let mut queue: VecDeque<u32> = VecDeque::new();
        for i in 0..10_000 {
            map.insert(i, i);
            queue.push_back(i);
        }
        let grown = map.capacity();
        for i in 0..9_990 {
            map.remove(&i);
            queue.pop_front();
            shrink_map(&mut map);
            shrink_deque(&mut queue);
        }
        assert_eq!(map.len(), 10);
        assert!(map.capacity() <= 2 * KEEP, "{} of {grown}", map.capacity());
        assert!(queue.capacity() <= 2 * KEEP, "{}", queue.capacity());
    }

    #[test]
    fn a_map_at_work_is_left_alone() {
        let mut map: HashMap<u32, u32> = HashMap::new();
        for i in 0..1_000 {
            map.insert(i, i);
        }
        let room = map.capacity();
        for i in 0..500 {
            map.remove(&i);
            shrink_map(&mut map);
        }
        // Not shrunk (`capacity` counts removed slots not yet reused as taken).
        assert!(map.capacity() > room * 9 / 10, "{} of {room}", map.capacity());
    }
}
