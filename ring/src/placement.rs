//! Preference lists for every virtual node at once, in O(V * RF) plus a small sort, instead of
//! walking the ring from every virtual node (quadratic when one node or rack is rare).
//! Inputs are member indices per sorted virtual node; `Ring::new` has validated them.

/// For a cyclic sequence of `labels` (each `< label_count`), the first `k` distinct labels met
/// walking clockwise from every start `s`, given as the sequence index of each label's first
/// occurrence, in walk order. Returns a flat vector: start `s` owns `[s * k, (s + 1) * k)`.
///
/// Uses the recurrence `L(s) = [s] ++ (L(s + 1) without the entry labelled labels[s])[..k - 1]`:
/// the first occurrence, from `s + 1`, of every label other than `labels[s]` is also its first
/// occurrence from `s`. Only the last start is walked directly.
///
/// Requires `k` to be at most the number of distinct labels in the sequence.
fn first_distinct(labels: &[usize], label_count: usize, k: usize) -> Vec<usize> {
    let n = labels.len();
    if k == 0 || n == 0 {
        return Vec::new();
    }
    let mut out = vec![0usize; n * k];

    // The last start, walked directly: at most one lap.
    let mut seen = vec![false; label_count];
    let mut filled = 0;
    let last = n - 1;
    for step in 0..n {
        let at = (last + step) % n;
        let label = labels[at];
        if !seen[label] {
            seen[label] = true;
            out[last * k + filled] = at;
            filled += 1;
            if filled == k {
                break;
            }
        }
    }
    debug_assert_eq!(filled, k, "fewer than k distinct labels");

    for s in (0..last).rev() {
        let (head, tail) = out.split_at_mut((s + 1) * k);
        let next = &tail[..k];
        let this = &mut head[s * k..];
        this[0] = s;
        let mut filled = 1;
        for &at in next {
            if filled == k {
                break;
            }
            if labels[at] != labels[s] {
                this[filled] = at;
                filled += 1;
            }
        }
    }
    out
}

/// [`Strategy::Simple`](crate::Strategy::Simple): for every virtual node, the first `rf`
/// distinct owners walking clockwise from it. `owners[i]` is the member index of virtual node
/// `i`; requires `rf <= member_count` and every member to own a virtual node. Returns member
/// indices, flat with stride `rf`.
pub(crate) fn simple(owners: &[usize], member_count: usize, rf: usize) -> Vec<usize> {
    first_distinct(owners, member_count, rf)
        .into_iter()
        .map(|at| owners[at])
        .collect()
}

/// One datacenter's share of the per-datacenter computation.
struct DcPlan {
    /// Replicas in this datacenter.
    rf: usize,
    /// Distinct racks in this datacenter.
    racks: usize,
    /// Ring indices of this datacenter's virtual nodes, ascending.
    positions: Vec<usize>,
    /// For every start within `positions`: the first `min(rf, racks)` distinct racks, as indices
    /// into `positions` (stride `min(rf, racks)`).
    rack_firsts: Vec<usize>,
    /// Only when `rf > racks`: for every start, the first `rf` distinct nodes, as indices into
    /// `positions` (stride `rf`).
    node_firsts: Vec<usize>,
}

/// One chosen replica while assembling a preference list, ordered by when the walk adds it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Pick {
    /// Ring steps from the start to the virtual node at which the replica is added.
    added_at: usize,
    /// Datacenter index (ties on `added_at` only happen within one datacenter; kept for order).
    dc: usize,
    /// 0 for a node taken on a new rack, 1 for a node taken after every rack was used.
    kind: u8,
    /// Ring steps from the start to the node's first virtual node.
    first_seen: usize,
    /// Member index.
    member: usize,
}

/// [`Strategy::PerDatacenter`](crate::Strategy::PerDatacenter), Cassandra's
/// NetworkTopologyStrategy.
///
/// `owners[i]` is the member index of virtual node `i`, `member_dc` and `member_rack` map member
/// indices to datacenter and (globally numbered) rack indices, `dc_rf[d]` is datacenter `d`'s
/// replication factor. Requires every member to own a virtual node and every `dc_rf[d]` to be at
/// most the number of members in `d`. Returns member indices, flat with stride `sum(dc_rf)`,
/// each list in the order the clockwise walk adds replicas.
///
/// The walk within a datacenter does not depend on other datacenters, so each is solved on its
/// own subsequence of virtual nodes:
/// - with `rf <= racks`, the replicas are the first node of each of the first `rf` distinct
///   racks;
/// - with `rf > racks`, the first node of every rack, plus the first `rf - racks` other distinct
///   nodes in ring order: those met before the last new rack (the skipped ones) are added when it
///   is reached, the later ones when they are met.
///
/// Lists of different datacenters are then interleaved by the ring position at which each
/// replica is added.
pub(crate) fn per_datacenter(
    owners: &[usize],
    member_dc: &[usize],
    member_rack: &[usize],
    dc_rf: &[usize],
) -> Vec<usize> {
    let v = owners.len();
    let member_count = member_dc.len();
    let rack_count = member_rack.iter().map(|&r| r + 1).max().unwrap_or(0);
    let stride: usize = dc_rf.iter().sum();
    if v == 0 || stride == 0 {
        return Vec::new();
    }

    // Racks per datacenter.
    let mut dc_racks = vec![0usize; dc_rf.len()];
    let mut rack_counted = vec![false; rack_count];
    for (m, &rack) in member_rack.iter().enumerate() {
        if !rack_counted[rack] {
            rack_counted[rack] = true;
            dc_racks[member_dc[m]] += 1;
        }
    }

    // Position of every virtual node within its datacenter's subsequence.
    let mut sub_index = vec![0usize; v];
    let mut positions: Vec<Vec<usize>> = vec![Vec::new(); dc_rf.len()];
    for (i, &owner) in owners.iter().enumerate() {
        let dc = member_dc[owner];
        sub_index[i] = positions[dc].len();
        positions[dc].push(i);
    }

    let plans: Vec<Option<DcPlan>> = positions
        .into_iter()
        .enumerate()
        .map(|(dc, positions)| {
            let rf = dc_rf[dc];
            if rf == 0 || positions.is_empty() {
                return None;
            }
            let racks = dc_racks[dc];
            let rack_labels: Vec<usize> =
                positions.iter().map(|&i| member_rack[owners[i]]).collect();
            let rack_firsts = first_distinct(&rack_labels, rack_count, rf.min(racks));
            let node_firsts = if rf > racks {
                let node_labels: Vec<usize> = positions.iter().map(|&i| owners[i]).collect();
                first_distinct(&node_labels, member_count, rf)
            } else {
                Vec::new()
            };
            Some(DcPlan {
                rf,
                racks,
                positions,
                rack_firsts,
                node_firsts,
            })
        })
        .collect();

    let mut out = vec![0usize; v * stride];
    // next[dc]: index into the datacenter's subsequence of its first virtual node at or after the
    // current start; before any is seen walking backwards, the walk wraps to its first one.
    let mut next = vec![0usize; dc_rf.len()];
    let mut picks: Vec<Pick> = Vec::with_capacity(stride);
    for i in (0..v).rev() {
        next[member_dc[owners[i]]] = sub_index[i];
        picks.clear();
        for (dc, plan) in plans.iter().enumerate() {
            let Some(plan) = plan else { continue };
            let q = next[dc];
            let steps = |sub: usize| (plan.positions[sub] + v - i) % v;
            let rack_k = plan.rf.min(plan.racks);
            let rack_start = picks.len();
            for &sub in &plan.rack_firsts[q * rack_k..(q + 1) * rack_k] {
                let at = steps(sub);
                picks.push(Pick {
                    added_at: at,
                    dc,
                    kind: 0,
                    first_seen: at,
                    member: owners[plan.positions[sub]],
                });
            }
            if plan.rf > plan.racks {
                // The last new rack is where the skipped nodes get added.
                let last_rack = picks.last().map_or(0, |p| p.added_at);
                let mut wanted = plan.rf - plan.racks;
                for &sub in &plan.node_firsts[q * plan.rf..(q + 1) * plan.rf] {
                    if wanted == 0 {
                        break;
                    }
                    let member = owners[plan.positions[sub]];
                    if picks[rack_start..].iter().any(|p| p.member == member) {
                        continue;
                    }
                    let at = steps(sub);
                    picks.push(Pick {
                        added_at: at.max(last_rack),
                        dc,
                        kind: 1,
                        first_seen: at,
                        member,
                    });
                    wanted -= 1;
                }
            }
        }
        picks.sort_unstable();
        for (slot, pick) in out[i * stride..(i + 1) * stride].iter_mut().zip(&picks) {
            *slot = pick.member;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// First `k` distinct labels from `s` by walking.
    fn walk(labels: &[usize], s: usize, k: usize) -> Vec<usize> {
        let mut found: Vec<usize> = Vec::new();
        for step in 0..labels.len() {
            let at = (s + step) % labels.len();
            if found.len() < k && !found.iter().any(|&f| labels[f] == labels[at]) {
                found.push(at);
            }
        }
        found
    }

    #[test]
    fn first_distinct_matches_walk() {
        let labels = [0, 0, 1, 0, 2, 2, 1, 3, 0, 3];
        for k in 1..=4 {
            let flat = first_distinct(&labels, 4, k);
            for s in 0..labels.len() {
                assert_eq!(
                    &flat[s * k..(s + 1) * k],
                    &walk(&labels, s, k)[..],
                    "k={k} s={s}"
                );
            }
        }
    }

    #[test]
    fn first_distinct_single_element() {
        assert_eq!(first_distinct(&[0], 1, 1), vec![0]);
        assert!(first_distinct(&[0, 1], 2, 0).is_empty());
    }

    #[test]
    fn simple_maps_to_owners() {
        let owners = [1, 0, 1, 2];
        assert_eq!(simple(&owners, 3, 2), vec![1, 0, 0, 1, 1, 2, 2, 1]);
    }

    #[test]
    fn per_datacenter_rack_then_skipped() {
        // One DC, racks: members 0,1 on rack 0, member 2 on rack 1. rf 3 > 2 racks.
        // Ring: 0 1 2 -> from 0: rack picks 0 (rack 0), 2 (rack 1); skipped 1 added at 2.
        let owners = [0, 1, 2];
        let out = per_datacenter(&owners, &[0, 0, 0], &[0, 0, 1], &[3]);
        assert_eq!(&out[0..3], &[0, 2, 1]);
        // From 1: 1 (rack 0), 2 (rack 1), then 0 met after every rack was used.
        assert_eq!(&out[3..6], &[1, 2, 0]);
        // From 2: 2 (rack 1), 0 (rack 0), then 1.
        assert_eq!(&out[6..9], &[2, 0, 1]);
    }
}
