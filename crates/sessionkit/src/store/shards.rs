//! Locking two shards of a sharded store at once, as `rotate` does when the old and the new key
//! live in different shards.

/// Takes the locks of shards `a` and `b` with `lock`, always the lower index first, and returns
/// them as (the guard of `a`, the guard of `b`); the second is `None` when both are one shard
/// (taking a lock twice would deadlock or fail).
///
/// A fixed order is what keeps two concurrent rotations, one from shard 3 to 7 and one from 7 to
/// 3, from each holding one lock while waiting for the other. Stores that take shard locks across
/// processes (the file store's lock files) get the same guarantee between processes, since the
/// order depends only on the indexes.
pub(crate) fn lock_two<G, E>(
    a: usize,
    b: usize,
    mut lock: impl FnMut(usize) -> Result<G, E>,
) -> Result<(G, Option<G>), E> {
    if a == b {
        return Ok((lock(a)?, None));
    }
    let low = lock(a.min(b))?;
    let high = lock(a.max(b))?;
    Ok(if a < b {
        (low, Some(high))
    } else {
        (high, Some(low))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_in_index_order_and_returns_in_argument_order() {
        let mut taken = Vec::new();
        let (a, b) = lock_two(7, 3, |i| {
            taken.push(i);
            Ok::<_, ()>(i)
        })
        .unwrap();
        assert_eq!(taken, vec![3, 7]);
        assert_eq!((a, b), (7, Some(3)));
        let mut taken = Vec::new();
        let (a, b) = lock_two(5, 5, |i| {
            taken.push(i);
            Ok::<_, ()>(i)
        })
        .unwrap();
        assert_eq!(taken, vec![5]);
        assert_eq!((a, b), (5, None));
    }
}
