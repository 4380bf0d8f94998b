//! The baseline: a naive first-fit allocator of aligned CIDR blocks over a
//! sorted list of free intervals (what a first IPAM usually is).

#[derive(Debug)]
pub(crate) struct FirstFit {
    /// Free intervals [start, end), sorted, never adjacent.
    free: Vec<(u64, u64)>,
}

impl FirstFit {
    pub(crate) fn new(base: u64, size: u64) -> Self {
        Self {
            free: vec![(base, base + size)],
        }
    }

    /// The lowest aligned block of `size` (a power of two) that is free.
    pub(crate) fn allocate(&mut self, size: u64) -> Option<u64> {
        for i in 0..self.free.len() {
            let (s, e) = self.free[i];
            let a = s.div_ceil(size) * size;
            if a + size <= e {
                let mut pieces = Vec::with_capacity(2);
                if a > s {
                    pieces.push((s, a));
                }
                if a + size < e {
                    pieces.push((a + size, e));
                }
                self.free.splice(i..=i, pieces);
                return Some(a);
            }
        }
        None
    }

    pub(crate) fn release(&mut self, start: u64, size: u64) {
        let end = start + size;
        let i = self.free.partition_point(|&(s, _)| s < start);
        let merge_left = i > 0 && self.free[i - 1].1 == start;
        let merge_right = i < self.free.len() && self.free[i].0 == end;
        match (merge_left, merge_right) {
            (true, true) => {
                self.free[i - 1].1 = self.free[i].1;
                self.free.remove(i);
            }
            (true, false) => self.free[i - 1].1 = end,
            (false, true) => self.free[i].0 = start,
            (false, false) => self.free.insert(i, (start, end)),
        }
    }

    pub(crate) fn intervals(&self) -> &[(u64, u64)] {
        &self.free
    }
}
