//! The orders benchmarks measure servers in. A run leaves the machine changed for the next
//! (caches, frequency, the kernel's socket state), so an order that always gives a server the
//! same predecessor biases it: rotated by one, in one `tls_bench` run of fifteen rounds four
//! of the echo's five worst against tokio-rustls (0.84–0.91×) were the rounds it was first
//! or came after the hand-written loop.

/// The rounds of a Williams design for `n` servers: `n` (`2n` when `n` is odd). Over them,
/// in [`order`], every server comes first equally often and follows every other server
/// equally often (once each; twice when `n` is odd).
pub fn period(n: usize) -> usize {
    if n.is_multiple_of(2) {
        n
    } else {
        2 * n
    }
}

/// The order of round `round`'s `n` servers (see [`period`]).
pub fn order(n: usize, round: usize) -> Vec<usize> {
    // The first row: 0, 1, n-1, 2, n-2, ...; the others add the row's number.
    let first = |j: usize| match j {
        0 => 0,
        j if j % 2 == 1 => j.div_ceil(2),
        j => n - j / 2,
    };
    let row = round % period(n);
    let mut order: Vec<usize> = (0..n).map(|j| (first(j) + row) % n).collect();
    if row >= n {
        order.reverse();
    }
    order
}

/// The servers `0..n` in an order that, repeated, has every server follow every other
/// exactly once a period and never itself: an Eulerian circuit of the complete directed
/// graph (Hierholzer's), `n (n - 1)` long (`[0]` for one server).
pub fn circuit(n: usize) -> Vec<usize> {
    if n < 2 {
        return vec![0; n];
    }
    let mut out: Vec<Vec<usize>> = (0..n)
        .map(|a| (0..n).filter(|&b| b != a).rev().collect())
        .collect();
    let (mut stack, mut path) = (vec![0], Vec::new());
    while let Some(&v) = stack.last() {
        match out[v].pop() {
            Some(w) => stack.push(w),
            None => path.extend(stack.pop()),
        }
    }
    path.reverse();
    path.pop(); // the start again: the circuit closes on its own first server
    path
}

#[cfg(test)]
mod tests {
    /// Every server first once, and every ordered pair of servers adjacent once.
    #[test]
    fn the_order_balances_first_places_and_predecessors() {
        for n in 1..=7usize {
            let rows = super::period(n);
            let mut firsts = vec![0; n];
            let mut pairs = vec![vec![0; n]; n];
            for round in 0..rows {
                let order = super::order(n, round);
                let mut sorted = order.clone();
                sorted.sort();
                assert_eq!(sorted, (0..n).collect::<Vec<_>>(), "{n}: {order:?}");
                firsts[order[0]] += 1;
                for w in order.windows(2) {
                    pairs[w[0]][w[1]] += 1;
                }
            }
            let each = rows / n;
            assert!(firsts.iter().all(|&f| f == each), "{n}: {firsts:?}");
            for (a, row) in pairs.iter().enumerate() {
                for (b, &count) in row.iter().enumerate() {
                    assert_eq!(count, if a == b { 0 } else { each }, "{n}: {a} then {b}");
                }
            }
        }
    }

    /// Repeated, the circuit has every server after every other once a period, across
    /// the joins too, and never after itself.
    #[test]
    fn the_circuit_has_every_server_follow_every_other_once() {
        assert_eq!(super::circuit(1), [0]);
        for n in 2..=7usize {
            let c = super::circuit(n);
            assert_eq!(c.len(), n * (n - 1), "{n}: {c:?}");
            let mut pairs = vec![vec![0; n]; n];
            for k in 0..c.len() {
                pairs[c[k]][c[(k + 1) % c.len()]] += 1;
            }
            for (a, row) in pairs.iter().enumerate() {
                for (b, &count) in row.iter().enumerate() {
                    assert_eq!(count, usize::from(a != b), "{n}: {a} then {b}: {c:?}");
                }
            }
        }
    }
}
