//! A resumable stream's kept bytes: the last bytes relayed, as a chain of deltas.
//!
//! Dify's events differ from one another in a few bytes (the token, a timestamp), so each
//! chunk is kept as what it does not share with the chunk after it: the lengths of the prefix
//! and of the suffix the two share, and the middle bytes between them. The newest chunk is
//! held whole: it is the base of the chain and what a follower that has caught up reads.
//! Coding each chunk against the *next* one means the oldest bytes go without re-coding
//! anything, and a follower near the tail undoes few deltas. A chunk that shares little with
//! the next is kept whole (a keyframe), and so is one at least every [`MAX_RUN`] chunks (and
//! [`MAX_RUN_BYTES`]), which bounds what a read anywhere reconstructs. The coding is exact
//! for any bytes; only how much it saves depends on chunks lining up with events.
//!
//! The chunks before the newest are records, oldest first: a tag byte, the lengths the tag
//! does not imply as varints, then the chunk's own bytes. A token event's record is its middle
//! and one byte. They are written into blocks, none straddling two: a short stream's one block
//! grows as it needs, up to [`BLOCK`], then full blocks are followed by new ones. The oldest
//! records are dropped by moving the start of the first block on; a block is freed whole once
//! all of it is dropped (nothing is moved), and the lone block of a short stream reclaims its
//! dropped bytes when it would grow.

use bytes::Bytes;

/// The most a follower gets in one piece when it catches up on kept bytes.
pub const CATCH_UP_PIECE: usize = 64 * 1024;
/// At most this many deltas (and chunk bytes behind them) between keyframes.
const MAX_RUN: usize = 128;
const MAX_RUN_BYTES: usize = 64 * 1024;
/// Room for the next chunks' tokens to be a little longer than the first's.
const FIRST_ROOM: usize = 16;
/// The records' first block: a short answer's.
const FIRST_RECORDS: usize = 256;
/// The size a block grows to before the next one starts (larger only for a larger record): a
/// sixteenth of the cap, within these bounds, so that the partly dropped first block and the
/// partly filled last one add little to it.
const BLOCK: usize = 16 * 1024;
const MIN_BLOCK: usize = 4 * 1024;
/// A place in the records: the block's index in the high half, the offset in it in the low.
const BLOCK_SHIFT: u32 = 32;
const OFFSET_MASK: usize = (1 << BLOCK_SHIFT) - 1;
// A place needs both halves: a block (up to [`MAX_ENTRY`] and a header) overflows 16 bits.
const _: () = assert!(
    usize::BITS >= 64,
    "a place in the records needs a 64-bit usize"
);
/// A chunk is coded as a delta only if it shares at least this much, and a quarter of itself.
const MIN_SHARED: usize = 24;
/// The largest record, so that its lengths fit three varint bytes: longer chunks are kept as
/// several.
const MAX_ENTRY: usize = u16::MAX as usize;
/// The longest record header: a tag and three lengths.
const MAX_HEADER: usize = 1 + 3 * 3;
/// The most of the newest chunk [`Kept::prefetch`] asks for: what the first-level cache holds
/// beside the next chunk.
const PREFETCH: usize = 8 * 1024;
const PREFETCH_MIN: usize = 1024;

/// Record tags: a keyframe (its length follows), a delta (its prefix, suffix and middle
/// lengths follow), or, from [`SHORT`] up, a delta with the same prefix and suffix as the
/// delta before it in its run and `tag - SHORT` middle bytes.
const KEY: u8 = 0;
const DELTA: u8 = 1;
const SHORT: u8 = 2;
/// Shared suffix bytes a delta may keep in its middle to be written in the short form.
const SHORT_SLACK: usize = 2;

/// The prefix and suffix lengths a short record takes from the delta before it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Shared {
    pre: u16,
    suf: u16,
}

/// One record, read: `pre` bytes shared with the start of the next chunk, `mid` bytes of its
/// own (at `data` in the buffer), then `suf` bytes shared with the next chunk's end. A
/// keyframe shares nothing: its middle is the whole chunk.
#[derive(Clone, Copy, Debug)]
struct Record {
    key: bool,
    pre: usize,
    mid: usize,
    suf: usize,
    data: usize,
}

impl Record {
    fn len(self) -> usize {
        self.pre + self.mid + self.suf
    }

    fn end(self) -> usize {
        self.data + self.mid
    }

    /// What a short record after this one shares.
    fn shared(self) -> Shared {
        Shared {
            pre: self.pre as u16,
            suf: self.suf as u16,
        }
    }
}

#[derive(Default)]
pub struct Kept {
    /// The records in blocks, oldest first; the first block's first bytes may be dropped ones.
    blocks: Vec<Vec<u8>>,
    /// Where the first record starts (a place, as the others: its block is the first).
    dead: usize,
    /// The newest chunk, whole.
    newest: Vec<u8>,
    /// Where the records after the last keyframe start, and their first chunk in the
    /// stream (a read near the tail starts there).
    run_off: usize,
    run_at: u64,
    /// What the first record's short form refers to.
    front: Shared,
    /// The last delta's lengths.
    last: Shared,
    /// Bytes of the deltas' chunks since the last keyframe, and how many.
    run_bytes: u32,
    run: u8,
    /// Bytes of the first record's chunk already dropped.
    head: u32,
    /// Offset of the first byte kept.
    start: u64,
    /// Bytes relayed so far.
    end: u64,
    pub done: bool,
    pub followers: u32,
    /// Whether the last call was an append (see [`Kept::prefetch`]).
    hot: bool,
}

impl Kept {
    pub fn start(&self) -> u64 {
        self.start
    }

    pub fn end(&self) -> u64 {
        self.end
    }

    /// Bytes kept.
    fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    /// Keeps `chunk`, dropping the oldest bytes beyond `max_bytes` (never the chunk's own: a
    /// follower that has caught up must still get it whole).
    pub fn append(&mut self, chunk: &[u8], max_bytes: usize) {
        self.hot = true;
        let len = self.len();
        let over = (len + chunk.len()).saturating_sub(max_bytes.max(chunk.len()));
        if chunk.is_empty() {
            self.drop_front(over);
            return;
        }
        if over == len && over > 0 {
            self.clear();
        }
        let mut at = self.end;
        let block = (max_bytes / 16).clamp(MIN_BLOCK, BLOCK);
        for part in chunk.chunks(MAX_ENTRY) {
            self.push(part, at, block);
            at += part.len() as u64;
        }
        self.end += chunk.len() as u64;
        if over > 0 {
            self.drop_front(over.min(self.len() - chunk.len()));
        }
    }

    /// Starts loading the newest chunk into the cache before the relay is polled for the next:
    /// an append compares the next chunk with all of it, and by then (the stream's last chunk
    /// came a while ago) it has usually left the caches. So do the first and last blocks'
    /// places in the block list, which the append reads next. Skipped right after an append,
    /// when they are still there, and for a chunk of a few lines (a token event's).
    pub fn prefetch(&mut self) {
        if std::mem::take(&mut self.hot) || self.newest.len() < PREFETCH_MIN {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        {
            let lines = self.newest[..self.newest.len().min(PREFETCH)].chunks(64);
            let blocks = [self.blocks.first(), self.blocks.last()];
            let places = blocks
                .into_iter()
                .flatten()
                .map(|b| std::ptr::from_ref(b).cast());
            for at in lines.map(|line| line.as_ptr()).chain(places) {
                // SAFETY: a prefetch is a hint: it reads nothing the program sees and cannot
                // fault; SSE, which it needs, is part of x86_64.
                unsafe {
                    std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                        at.cast(),
                    );
                }
            }
        }
    }

    /// Gives back the room kept for more bytes (the stream has ended).
    pub fn shrink(&mut self) {
        self.compact();
        if let Some(last) = self.blocks.last_mut() {
            last.shrink_to_fit();
        }
        self.blocks.shrink_to_fit();
        self.newest.shrink_to_fit();
    }

    /// Drops everything kept.
    fn clear(&mut self) {
        self.blocks.truncate(1);
        if let Some(block) = self.blocks.first_mut() {
            block.clear();
        }
        self.newest.clear();
        (self.dead, self.run_off, self.run) = (0, 0, 0);
        (self.run_bytes, self.head) = (0, 0);
        self.start = self.end;
    }

    /// Makes `chunk` (at `at` in the stream) the newest, coding the one it follows against it.
    fn push(&mut self, chunk: &[u8], at: u64, block_size: usize) {
        if self.newest.is_empty() {
            self.newest.reserve_exact(chunk.len() + FIRST_ROOM);
            self.newest.extend_from_slice(chunk);
            return;
        }
        let old = &self.newest[..];
        // Chunks of a stream share about as long a prefix as the two before them did.
        let guess = usize::from(self.last.pre).saturating_sub(16);
        let pre = common_prefix(old, chunk, guess);
        let suf = common_suffix(&old[pre..], &chunk[pre..]);
        let shared = pre + suf;
        let delta = shared >= MIN_SHARED
            && shared * 4 >= old.len()
            && usize::from(self.run) < MAX_RUN
            && self.run_bytes as usize + old.len() <= MAX_RUN_BYTES;
        let mut header = [0u8; MAX_HEADER];
        if delta {
            let (last_pre, last_suf) = (usize::from(self.last.pre), usize::from(self.last.suf));
            let short_mid = old.len().wrapping_sub(pre + last_suf);
            let short = self.run > 0
                && pre == last_pre
                && suf >= last_suf
                && suf - last_suf <= SHORT_SLACK
                && short_mid <= usize::from(u8::MAX - SHORT);
            let (kept_suf, header_len) = if short {
                header[0] = SHORT + short_mid as u8;
                (last_suf, 1)
            } else {
                header[0] = DELTA;
                let mut n = 1;
                for value in [pre, suf, old.len() - shared] {
                    n += put_varint(value, &mut header[n..]);
                }
                (suf, n)
            };
            let mid = old.len() - pre - kept_suf;
            let block = self.reserve(header_len + mid, block_size);
            let block = &mut self.blocks[block];
            if header_len == 1 {
                block.push(header[0]);
            } else {
                block.extend_from_slice(&header[..header_len]);
            }
            block.extend_from_slice(&self.newest[pre..pre + mid]);
            self.run += 1;
            self.run_bytes += self.newest.len() as u32;
            self.last = Shared {
                pre: pre as u16,
                suf: kept_suf as u16,
            };
        } else {
            header[0] = KEY;
            let header_len = 1 + put_varint(old.len(), &mut header[1..]);
            let block = self.reserve(header_len + self.newest.len(), block_size);
            let block = &mut self.blocks[block];
            block.extend_from_slice(&header[..header_len]);
            block.extend_from_slice(&self.newest);
            (self.run, self.run_bytes) = (0, 0);
            (self.run_off, self.run_at) = (self.records_end(), at);
        }
        // The new chunk differs from the old only between the shared prefix and suffix.
        let newest = &mut self.newest;
        if newest.capacity() > 4 * chunk.len() && newest.capacity() > 4 * 1024 {
            *newest = chunk.to_vec();
            return;
        }
        let (old_end, new_end) = (newest.len() - suf, chunk.len() - suf);
        if chunk.len() > newest.capacity() {
            newest.reserve_exact(chunk.len() + chunk.len() / 8 - newest.len());
        }
        if new_end > old_end {
            newest.resize(chunk.len(), 0);
            newest.copy_within(old_end..old_end + suf, new_end);
        } else if new_end < old_end {
            newest.copy_within(old_end.., new_end);
            newest.truncate(chunk.len());
        }
        newest[pre..new_end].copy_from_slice(&chunk[pre..new_end]);
    }

    /// Makes room for `extra` more bytes at the end of the last block, or starts a block;
    /// returns the block's index. A lone block reclaims its dropped bytes once they are a
    /// quarter of what it keeps, else grows to a quarter more than it needs (a short stream's
    /// records stay near their size), up to `block`.
    fn reserve(&mut self, extra: usize, block: usize) -> usize {
        let Some(last) = self.blocks.last() else {
            // Room for the one block a short stream needs, not the four a push would make.
            self.blocks = Vec::with_capacity(1);
            self.blocks
                .push(Vec::with_capacity((extra + extra / 4).max(FIRST_RECORDS)));
            return 0;
        };
        if last.capacity() - last.len() >= extra {
            return self.blocks.len() - 1;
        }
        if last.capacity() >= block {
            // No record is kept before the new block (an emptied block): the first starts it.
            let none_kept = self.dead == self.records_end();
            self.blocks.push(Vec::with_capacity(block.max(extra)));
            let index = self.blocks.len() - 1;
            if none_kept {
                self.dead = index << BLOCK_SHIFT;
            }
            return index;
        }
        if self.blocks.len() == 1 {
            self.compact();
        }
        let index = self.blocks.len() - 1;
        let last = &mut self.blocks[index];
        let need = last.len() + extra;
        if last.capacity() < need {
            let room = (need + need / 4).max(FIRST_RECORDS).min(block.max(need));
            last.reserve_exact(room - last.len());
        }
        index
    }

    /// Moves a lone block's records to its start, over the dropped bytes.
    fn compact(&mut self) {
        if self.dead == 0 || self.blocks.len() != 1 {
            return;
        }
        let block = &mut self.blocks[0];
        block.drain(..self.dead);
        self.run_off = self.run_off.saturating_sub(self.dead);
        self.dead = 0;
        let live = block.len();
        if block.capacity() > 4 * live && block.capacity() > 16 * 1024 {
            block.shrink_to(live + live / 4);
        }
    }

    fn drop_front(&mut self, n: usize) {
        self.start += n as u64;
        let mut n = n + self.head as usize;
        let end = self.records_end();
        while self.dead < end {
            let record = self.record(self.dead, self.front);
            if n < record.len() {
                break;
            }
            n -= record.len();
            self.front = record.shared();
            self.dead = self.next(record.end());
        }
        self.head = n as u32;
        let gone = self.dead >> BLOCK_SHIFT;
        if gone > 0 {
            self.blocks.drain(..gone);
            self.dead -= gone << BLOCK_SHIFT;
            self.run_off = self.run_off.saturating_sub(gone << BLOCK_SHIFT);
        }
    }

    /// Where the records end: the place after the last.
    fn records_end(&self) -> usize {
        self.blocks.last().map_or(0, |last| {
            (self.blocks.len() - 1) << BLOCK_SHIFT | last.len()
        })
    }

    /// Where the record after one that ends at `at` starts: the next block's start if `at`
    /// is its block's end.
    fn next(&self, at: usize) -> usize {
        let index = at >> BLOCK_SHIFT;
        if index + 1 < self.blocks.len() && at & OFFSET_MASK == self.blocks[index].len() {
            (index + 1) << BLOCK_SHIFT
        } else {
            at
        }
    }

    /// A record's own bytes.
    fn mid(&self, record: Record) -> &[u8] {
        let from = record.data & OFFSET_MASK;
        &self.blocks[record.data >> BLOCK_SHIFT][from..from + record.mid]
    }

    /// The record at `at`; a short one takes its lengths from `before`.
    fn record(&self, at: usize, before: Shared) -> Record {
        let base = at & !OFFSET_MASK;
        let (block, at) = (&self.blocks[at >> BLOCK_SHIFT], at & OFFSET_MASK);
        let tag = block[at];
        let mut data = at + 1;
        let (key, pre, mid, suf) = match tag {
            KEY => (true, 0, get_varint(block, &mut data), 0),
            DELTA => {
                let pre = get_varint(block, &mut data);
                let suf = get_varint(block, &mut data);
                (false, pre, get_varint(block, &mut data), suf)
            }
            _ => (
                false,
                before.pre.into(),
                usize::from(tag - SHORT),
                before.suf.into(),
            ),
        };
        Record {
            key,
            pre,
            mid,
            suf,
            data: base | data,
        }
    }

    /// The kept bytes from `pos` (at most [`CATCH_UP_PIECE`]); `None` at the end or outside.
    pub fn bytes_at(&self, pos: u64) -> Option<Bytes> {
        if pos < self.start || pos >= self.end {
            return None;
        }
        let newest = &self.newest;
        let newest_at = self.end - newest.len() as u64;
        if pos >= newest_at {
            let from = usize::try_from(pos - newest_at).ok()?;
            let take = (newest.len() - from).min(CATCH_UP_PIECE);
            return Some(Bytes::copy_from_slice(&newest[from..from + take]));
        }
        let (mut at, mut before, chunk_at) = self.locate(pos)?;
        let skip = usize::try_from(pos - chunk_at).ok()?;
        let want = skip
            + usize::try_from(self.end - pos)
                .map_or(CATCH_UP_PIECE, |rest| rest.min(CATCH_UP_PIECE));
        let mut out = Vec::new();
        while out.len() < want {
            let Some(next) = self.rebuild_run(at, before, &mut out) else {
                break;
            };
            (at, before) = next;
        }
        out.truncate(want);
        Some(Bytes::from(out).slice(skip..))
    }

    /// The record that holds `pos` (before the newest chunk): where it is in the buffer, what
    /// a short one refers to, and where its chunk starts in the stream. Reads in the last run
    /// start at its first record, others at the first record kept.
    fn locate(&self, pos: u64) -> Option<(usize, Shared, u64)> {
        let (mut at, mut before, mut chunk_at) = if self.run_off > self.dead && pos >= self.run_at {
            (self.next(self.run_off), Shared::default(), self.run_at)
        } else {
            (self.dead, self.front, self.start - u64::from(self.head))
        };
        let end = self.records_end();
        while at < end {
            let record = self.record(at, before);
            if chunk_at + record.len() as u64 > pos {
                return Some((at, before, chunk_at));
            }
            chunk_at += record.len() as u64;
            before = record.shared();
            at = self.next(record.end());
        }
        None
    }

    /// Appends to `out` the chunks from the record at `at` to the end of its run: the first
    /// keyframe, or the newest chunk. Returns where the next run starts, `None` after the
    /// newest.
    fn rebuild_run(
        &self,
        mut at: usize,
        mut before: Shared,
        out: &mut Vec<u8>,
    ) -> Option<(usize, Shared)> {
        let mut deltas = Vec::new();
        let mut key = None;
        let mut total = 0;
        let end = self.records_end();
        while at < end {
            let record = self.record(at, before);
            before = record.shared();
            at = self.next(record.end());
            if record.key {
                key = Some(record);
                break;
            }
            total += record.len();
            deltas.push(record);
        }
        let base = match key {
            Some(key) => self.mid(key),
            None => &self.newest[..],
        };
        let mut to = out.len() + total;
        let mut next_len = base.len();
        out.extend(std::iter::repeat_n(0, total));
        out.extend_from_slice(base);
        for record in deltas.iter().rev() {
            let this = to - record.len();
            let (pre, mid, suf) = (record.pre, record.mid, record.suf);
            out.copy_within(to..to + pre, this);
            out[this + pre..this + pre + mid].copy_from_slice(self.mid(*record));
            out.copy_within(to + next_len - suf..to + next_len, this + pre + mid);
            (to, next_len) = (this, record.len());
        }
        key.map(|_| (at, before))
    }

    /// Bytes held for the kept bytes (capacity), for the tests' budgets.
    #[cfg(test)]
    fn held(&self) -> usize {
        let blocks: usize = self.blocks.iter().map(Vec::capacity).sum();
        blocks + self.blocks.capacity() * size_of::<Vec<u8>>() + self.newest.capacity()
    }

    /// The records kept, oldest first.
    #[cfg(test)]
    fn records(&self) -> Vec<Record> {
        let (mut at, mut before, mut records) = (self.dead, self.front, Vec::new());
        while at < self.records_end() {
            let record = self.record(at, before);
            (at, before) = (self.next(record.end()), record.shared());
            records.push(record);
        }
        records
    }
}

/// Writes `value` (at most [`MAX_ENTRY`]) as a varint; returns its length.
fn put_varint(mut value: usize, out: &mut [u8]) -> usize {
    let mut n = 0;
    while value >= 0x80 {
        out[n] = (value as u8) | 0x80;
        value >>= 7;
        n += 1;
    }
    out[n] = value as u8;
    n + 1
}

/// Reads the varint at `*at`, moving `at` past it.
fn get_varint(buf: &[u8], at: &mut usize) -> usize {
    let (mut value, mut shift) = (0, 0);
    loop {
        let byte = buf[*at];
        *at += 1;
        value |= usize::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return value;
        }
        shift += 7;
    }
}

/// How many bytes `a` and `b` start with in common, checking the first `guess` at once.
fn common_prefix(a: &[u8], b: &[u8], guess: usize) -> usize {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut i = 0;
    if guess <= n && a[..guess] == b[..guess] {
        i = guess;
    } else {
        // Whole 32-byte blocks compare as vectors; the first that differs is searched by word.
        let (a32, _) = a.as_chunks::<32>();
        let (b32, _) = b.as_chunks::<32>();
        for (x, y) in a32.iter().zip(b32) {
            if x != y {
                break;
            }
            i += 32;
        }
    }
    let (a8, _) = a[i..].as_chunks::<8>();
    let (b8, _) = b[i..].as_chunks::<8>();
    for (x, y) in a8.iter().zip(b8) {
        let diff = u64::from_le_bytes(*x) ^ u64::from_le_bytes(*y);
        if diff != 0 {
            return i + (diff.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    i + a[i..]
        .iter()
        .zip(&b[i..])
        .take_while(|(x, y)| x == y)
        .count()
}

/// How many bytes `a` and `b` end with in common.
fn common_suffix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let (a, b) = (&a[a.len() - n..], &b[b.len() - n..]);
    let mut i = 0;
    let (_, a8) = a.as_rchunks::<8>();
    let (_, b8) = b.as_rchunks::<8>();
    for (x, y) in a8.iter().rev().zip(b8.iter().rev()) {
        let diff = u64::from_le_bytes(*x) ^ u64::from_le_bytes(*y);
        if diff != 0 {
            return i + (diff.leading_zeros() / 8) as usize;
        }
        i += 8;
    }
    let (a, b) = (&a[..n - i], &b[..n - i]);
    i + a
        .iter()
        .rev()
        .zip(b.iter().rev())
        .take_while(|(x, y)| x == y)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    /// A Dify token event as it arrives, like the bench's (a timestamp in each).
    fn token_event(token: &str, nanos: u64) -> String {
        format!(
            "data: {{\"event\": \"message\", \"conversation_id\": \"aa0483db-e114-40ab-b70f-c2128bd443fa\", \"message_id\": \"f3e2cd8a-f1d4-4370-b648-12d5e59a88e3\", \"created_at\": 1795662501, \"task_id\": \"f02dec3c-358c-4b01-9451-860821071dba\", \"id\": \"f3e2cd8a-f1d4-4370-b648-12d5e59a88e3\", \"answer\": \"{token}\", \"from_variable_selector\": null, \"t\": {nanos}}}\n\n"
        )
    }

    /// A Dify token event as Dify sends it.
    fn dify_event(token: &str) -> String {
        format!(
            "data: {{\"event\": \"message\", \"conversation_id\": \"aa0483db-e114-40ab-b70f-c2128bd443fa\", \"message_id\": \"f3e2cd8a-f1d4-4370-b648-12d5e59a88e3\", \"created_at\": 1795662501, \"task_id\": \"f02dec3c-358c-4b01-9451-860821071dba\", \"id\": \"f3e2cd8a-f1d4-4370-b648-12d5e59a88e3\", \"answer\": \"{token}\", \"from_variable_selector\": null}}\n\n"
        )
    }

    /// What a model of the rule says is kept: everything appended, less the oldest bytes
    /// beyond the cap (never the last chunk's).
    struct Model {
        all: Vec<u8>,
        start: usize,
    }

    impl Model {
        fn append(&mut self, chunk: &[u8], max_bytes: usize) {
            let len = self.all.len() - self.start;
            self.start += (len + chunk.len()).saturating_sub(max_bytes.max(chunk.len()));
            self.all.extend_from_slice(chunk);
        }
    }

    /// Reads from `pos` piece by piece to the end, as a follower does.
    fn read_from(kept: &Kept, mut pos: u64) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(piece) = kept.bytes_at(pos) {
            assert!(!piece.is_empty() && piece.len() <= CATCH_UP_PIECE);
            pos += piece.len() as u64;
            out.extend_from_slice(&piece);
        }
        out
    }

    fn assert_same(kept: &Kept, model: &Model) {
        assert_same_every(kept, model, 1);
    }

    /// [`assert_same`], reading from every `step`th offset only (each read rebuilds its chunk
    /// from the keyframe before it, so reading every offset of a long chain takes minutes).
    fn assert_same_every(kept: &Kept, model: &Model, step: usize) {
        assert_eq!(
            (kept.start(), kept.end()),
            (model.start as u64, model.all.len() as u64)
        );
        assert_eq!(kept.len(), model.all.len() - model.start);
        for pos in (model.start..model.all.len()).step_by(step) {
            let piece = kept.bytes_at(pos as u64).expect("a kept offset has bytes");
            assert_eq!(piece[..], model.all[pos..pos + piece.len()], "at {pos}");
        }
        assert_eq!(
            read_from(kept, model.start as u64),
            model.all[model.start..]
        );
        assert_eq!(kept.bytes_at(model.all.len() as u64), None);
        if model.start > 0 {
            assert_eq!(kept.bytes_at(model.start as u64 - 1), None);
        }
    }

    /// A token event of any token and timestamp.
    fn any_event() -> impl Strategy<Value = Vec<u8>> {
        ("[a-z \\\\\"]{0,6}", any::<u64>())
            .prop_map(|(token, nanos)| token_event(&token, nanos).into_bytes())
    }

    /// Chunks as Dify's arrive: mostly one event each, sometimes an event split in two,
    /// two events in one, bytes of any value, or nothing.
    fn dify_chunks() -> impl Strategy<Value = Vec<Vec<u8>>> {
        let chunk = prop_oneof![
            6 => any_event().prop_map(|event| vec![event]),
            1 => (any_event(), any::<prop::sample::Index>()).prop_map(|(event, at)| {
                let (a, b) = event.split_at(at.index(event.len() + 1));
                vec![a.to_vec(), b.to_vec()]
            }),
            1 => (any_event(), any_event()).prop_map(|(a, b)| vec![[a, b].concat()]),
            1 => prop::collection::vec(any::<u8>(), 0..400).prop_map(|bytes| vec![bytes]),
            1 => Just(vec![Vec::new()]),
        ];
        prop::collection::vec(chunk, 0..40).prop_map(|chunks| chunks.concat())
    }

    /// Token events and bytes of any value, cut anywhere (repeated cuts: empty chunks).
    fn cut_anywhere() -> impl Strategy<Value = Vec<Vec<u8>>> {
        let piece = prop_oneof![4 => any_event(), 1 => prop::collection::vec(any::<u8>(), 0..400)];
        (
            prop::collection::vec(piece, 0..40),
            prop::collection::vec(any::<prop::sample::Index>(), 0..60),
        )
            .prop_map(|(pieces, cuts)| {
                let bytes = pieces.concat();
                let mut cuts: Vec<usize> =
                    cuts.iter().map(|cut| cut.index(bytes.len() + 1)).collect();
                cuts.sort_unstable();
                let mut from = 0;
                let mut chunks = Vec::new();
                for cut in cuts.into_iter().chain([bytes.len()]) {
                    chunks.push(bytes[from..cut].to_vec());
                    from = cut;
                }
                chunks
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn dify_like_chunks_read_back_exactly_from_every_kept_offset(
            chunks in dify_chunks(),
            max_bytes in prop_oneof![Just(1usize << 20), 1usize..5000],
        ) {
            replay(&chunks, max_bytes, false);
        }

        #[test]
        fn chunks_cut_anywhere_read_back_exactly_after_every_append(
            chunks in cut_anywhere(),
            max_bytes in 1usize..3000,
        ) {
            replay(&chunks, max_bytes, true);
        }
    }

    /// Appends `chunks` to a `Kept` and to the model, comparing them at the end or after each.
    fn replay(chunks: &[Vec<u8>], max_bytes: usize, after_each: bool) {
        let mut kept = Kept::default();
        let mut model = Model {
            all: Vec::new(),
            start: 0,
        };
        for chunk in chunks {
            kept.append(chunk, max_bytes);
            model.append(chunk, max_bytes);
            if after_each {
                assert_same(&kept, &model);
            }
        }
        assert_same(&kept, &model);
    }

    #[test]
    fn a_record_larger_than_an_emptied_full_block_starts_the_next_block() {
        // Chunks of 2,000 unlike bytes grow the lone block to a full block (4 KiB under this
        // cap); a chunk over the cap empties it, and the keyframe of that chunk does not fit.
        let mut chunks: Vec<Vec<u8>> = (0..4).map(|i| vec![b'a' + i; 2000]).collect();
        chunks.push(vec![b'x'; 5000]);
        chunks.push(b"data: next\n\n".to_vec());
        chunks.push(b"data: last\n\n".to_vec());
        replay(&chunks, 2081, true);
    }

    #[test]
    fn a_read_anywhere_undoes_at_most_a_run_of_deltas() {
        let mut kept = Kept::default();
        let mut model = Model {
            all: Vec::new(),
            start: 0,
        };
        let events = 3 * MAX_RUN + 10;
        for i in 0..events {
            let event = token_event("abc", 1_705_395_332_000_000_000 + i as u64);
            kept.append(event.as_bytes(), 1 << 20);
            model.append(event.as_bytes(), 1 << 20);
        }
        let (mut run, mut longest) = (0, 0);
        let records = kept.records();
        for record in &records {
            run = if record.key { 0 } else { run + 1 };
            longest = longest.max(run);
        }
        assert_eq!(longest, MAX_RUN);
        assert!(records.iter().filter(|record| record.key).count() <= events / MAX_RUN + 1);
        // A stride prime to the events' lengths still lands everywhere in a chunk.
        assert_same_every(&kept, &model, 29);
    }

    #[test]
    fn whole_token_events_are_kept_as_a_few_bytes_each() {
        let mut kept = Kept::default();
        let mut appended = 0;
        for i in 0..90 {
            let token = ["Hello", " I", " am", "!", " Dify"][i % 5];
            let event = dify_event(token);
            appended += event.len();
            kept.append(event.as_bytes(), 1 << 20);
        }
        assert!(appended > 90 * 300);
        assert!(
            kept.held() < 1024,
            "{} bytes held for {appended}",
            kept.held()
        );
    }

    #[test]
    fn bench_token_events_a_second_apart_keep_a_record_of_a_dozen_bytes_each() {
        let mut kept = Kept::default();
        let mut model = Model {
            all: Vec::new(),
            start: 0,
        };
        let mut nanos: u64 = 1_795_662_501_123_456_789;
        let mut x = 7u64;
        for _ in 0..90 {
            let event = token_event("abcdefghijabcdef", nanos);
            kept.append(event.as_bytes(), 1 << 20);
            model.append(event.as_bytes(), 1 << 20);
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            nanos += 1_000_000_000 + (x >> 40) % 5_000_000;
        }
        assert_same(&kept, &model);
        let newest = kept.newest.len();
        let records = kept.records_end() - kept.dead;
        assert!(records < 89 * 13, "{records} bytes of records");
        assert!(
            kept.held() < records * 5 / 4 + newest + FIRST_ROOM,
            "{} bytes held for {records} of records and {newest} of the newest",
            kept.held()
        );
    }

    #[test]
    fn the_cap_drops_the_oldest_bytes_even_mid_chunk() {
        let mut kept = Kept::default();
        let events: Vec<String> = (0..40).map(|i| token_event("ab", i)).collect();
        for event in &events {
            kept.append(event.as_bytes(), 1000);
        }
        let all = events.concat().into_bytes();
        assert_eq!(kept.end(), all.len() as u64);
        assert_eq!(kept.start(), all.len() as u64 - 1000);
        assert_ne!(
            kept.start() % events[0].len() as u64,
            0,
            "the cap falls inside a chunk"
        );
        assert_eq!(read_from(&kept, kept.start()), all[all.len() - 1000..]);
        assert_eq!(kept.bytes_at(kept.start() - 1), None);
    }

    #[test]
    fn a_single_chunk_larger_than_the_cap_is_still_kept() {
        let mut kept = Kept::default();
        kept.append(b"ab", 4);
        kept.append(b"0123456789", 4);
        assert_eq!(kept.start(), 2);
        assert_eq!(kept.bytes_at(2).as_deref(), Some(&b"0123456789"[..]));
    }

    #[test]
    fn chunks_longer_than_an_entry_read_back_whole() {
        let mut kept = Kept::default();
        let mut model = Model {
            all: Vec::new(),
            start: 0,
        };
        let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for (from, to) in [
            (0, 150_000),
            (10, 10),
            (3, 140_000),
            (0, 200_000),
            (5, 70_000),
        ] {
            kept.append(&big[from..to], 300_000);
            model.append(&big[from..to], 300_000);
        }
        assert_eq!(
            read_from(&kept, model.start as u64),
            model.all[model.start..]
        );
        for pos in (model.start..model.all.len()).step_by(997) {
            let piece = kept.bytes_at(pos as u64).expect("kept");
            assert_eq!(piece[..], model.all[pos..pos + piece.len()]);
        }
    }

    #[test]
    fn at_its_cap_a_stream_of_unlike_chunks_holds_little_more_than_the_cap() {
        let mut kept = Kept::default();
        let mut x = 1u32;
        for _ in 0..2000 {
            let chunk: Vec<u8> = (0..300)
                .map(|_| {
                    x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (x >> 24) as u8
                })
                .collect();
            kept.append(&chunk, 64 * 1024);
        }
        assert!(kept.held() < 64 * 1024 * 5 / 4 + 4096, "{}", kept.held());
    }

    #[test]
    fn bulk_events_at_the_cap_fill_blocks_that_are_freed_whole() {
        let mut kept = Kept::default();
        let mut model = Model {
            all: Vec::new(),
            start: 0,
        };
        let answer = "abcdefghij".repeat(100);
        for i in 0..400 {
            let event = token_event(&answer, 1_795_662_501_123_456_789 + i * 5_001_234);
            // Now and then an event comes cut in two, as a read can leave it.
            let cut = if i % 7 == 3 { event.len() / 3 } else { 0 };
            for part in [&event[..cut], &event[cut..]] {
                kept.append(part.as_bytes(), 64 * 1024);
                model.append(part.as_bytes(), 64 * 1024);
            }
            if i % 50 == 49 {
                for pos in (model.start..model.all.len()).step_by(4093) {
                    let piece = kept.bytes_at(pos as u64).expect("a kept offset has bytes");
                    assert_eq!(piece[..], model.all[pos..pos + piece.len()], "at {pos}");
                }
            }
        }
        assert!(kept.blocks.len() > 2, "{} blocks", kept.blocks.len());
        assert!(kept.held() < 64 * 1024 / 2, "{}", kept.held());
        assert_eq!(
            read_from(&kept, model.start as u64),
            model.all[model.start..]
        );
        kept.shrink();
        assert_eq!(
            read_from(&kept, model.start as u64),
            model.all[model.start..]
        );
    }

    #[test]
    fn a_follower_at_the_tail_reads_the_newest_chunk_whole() {
        let mut kept = Kept::default();
        let mut end = 0;
        for i in 0..100 {
            let event = token_event("x", i);
            kept.append(event.as_bytes(), 1 << 20);
            assert_eq!(kept.bytes_at(end).as_deref(), Some(event.as_bytes()));
            end += event.len() as u64;
        }
        let (one, two) = (token_event("y", 1), token_event("z", 2));
        kept.append(one.as_bytes(), 1 << 20);
        kept.append(two.as_bytes(), 1 << 20);
        assert_eq!(kept.bytes_at(end).as_deref(), Some((one + &two).as_bytes()));
    }

    #[test]
    fn a_long_catch_up_comes_in_pieces_of_at_most_the_piece_size() {
        let mut kept = Kept::default();
        let mut all = Vec::new();
        for i in 0..1000 {
            let event = token_event("tok", i);
            kept.append(event.as_bytes(), 1 << 20);
            all.extend_from_slice(event.as_bytes());
        }
        let first = kept.bytes_at(0).expect("kept");
        assert_eq!(first.len(), CATCH_UP_PIECE);
        assert_eq!(read_from(&kept, 0), all);
    }

    #[test]
    fn common_ends_are_found_at_any_length_and_alignment() {
        let a: Vec<u8> = (0..200).map(|i| i as u8).collect();
        for n in 0..a.len() {
            let mut b = a.clone();
            b[n] ^= 1;
            for guess in [0, n / 2, n, n + 1, a.len()] {
                assert_eq!(common_prefix(&a, &b, guess), n);
            }
            assert_eq!(common_suffix(&a, &b), a.len() - n - 1);
            assert_eq!(common_prefix(&a[..n], &a, n / 2), n);
            assert_eq!(common_suffix(&a[n..], &a), a.len() - n);
        }
    }
}
