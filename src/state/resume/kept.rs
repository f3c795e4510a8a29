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

use std::collections::VecDeque;

use bytes::Bytes;

/// The most a follower gets in one piece when it catches up on kept bytes.
pub const CATCH_UP_PIECE: usize = 64 * 1024;
/// At most this many deltas (and chunk bytes behind them) between keyframes.
const MAX_RUN: usize = 128;
const MAX_RUN_BYTES: usize = 64 * 1024;
/// Entries reserved with a stream's first chunk (a short answer's).
const FIRST_ENTRIES: usize = 32;
/// A chunk is coded as a delta only if it shares at least this much, and a quarter of itself.
const MIN_SHARED: usize = 24;
/// The largest entry, so that its lengths fit its fields: longer chunks are kept as several.
const MAX_ENTRY: usize = u16::MAX as usize;
/// The sizes of the blocks the entries' middles are held in.
const MIN_BLOCK: usize = 256;
const MAX_BLOCK: usize = 8 * 1024;

/// One kept chunk: `pre` bytes shared with the start of the next chunk, `mid` bytes of its
/// own (in the arena), then `suf` bytes shared with the next chunk's end. A keyframe shares
/// nothing: its middle is the whole chunk.
#[derive(Clone, Copy, Debug)]
struct Entry {
    pre: u16,
    suf: u16,
    mid: u16,
}

impl Entry {
    fn pre(self) -> usize {
        usize::from(self.pre)
    }

    fn suf(self) -> usize {
        usize::from(self.suf)
    }

    fn mid(self) -> usize {
        usize::from(self.mid)
    }

    fn len(self) -> usize {
        self.pre() + self.mid() + self.suf()
    }

    fn is_key(self) -> bool {
        self.pre == 0 && self.suf == 0
    }
}

#[derive(Default)]
pub struct Kept {
    /// Every kept chunk but the newest, oldest first.
    entries: VecDeque<Entry>,
    /// The entries' middles, in the same order.
    arena: Arena,
    /// The newest chunk, whole.
    newest: Vec<u8>,
    /// Deltas since the last keyframe, and the bytes of their chunks.
    run: usize,
    run_bytes: usize,
    /// The prefix the last two chunks shared.
    last_pre: u16,
    /// Bytes of the oldest kept chunk already dropped.
    head: usize,
    /// Bytes kept (`end - start`).
    len: usize,
    /// Offset of the first byte kept.
    start: u64,
    /// Bytes relayed so far.
    end: u64,
    pub done: bool,
    pub followers: usize,
}

impl Kept {
    pub fn start(&self) -> u64 {
        self.start
    }

    pub fn end(&self) -> u64 {
        self.end
    }

    /// Keeps `chunk`, dropping the oldest bytes beyond `max_bytes` (never the chunk's own: a
    /// follower that has caught up must still get it whole).
    pub fn append(&mut self, chunk: &[u8], max_bytes: usize) {
        let over = (self.len + chunk.len()).saturating_sub(max_bytes.max(chunk.len()));
        if chunk.is_empty() {
            self.drop_front(over);
            return;
        }
        if over == self.len && over > 0 {
            self.clear();
        }
        for part in chunk.chunks(MAX_ENTRY) {
            self.push(part);
        }
        self.len += chunk.len();
        self.end += chunk.len() as u64;
        if over > 0 {
            self.drop_front(over.min(self.len - chunk.len()));
        }
    }

    /// Drops everything kept.
    fn clear(&mut self) {
        self.entries.clear();
        self.arena = Arena::default();
        self.newest.clear();
        (self.run, self.run_bytes, self.head) = (0, 0, 0);
        self.start += self.len as u64;
        self.len = 0;
    }

    /// Makes `chunk` the newest, coding the one it follows against it.
    fn push(&mut self, chunk: &[u8]) {
        if self.newest.is_empty() {
            // Room for the next chunks' tokens to be a little longer, and for a run of entries.
            self.newest.reserve(chunk.len() + 64);
            self.newest.extend_from_slice(chunk);
            self.entries.reserve(FIRST_ENTRIES);
            return;
        }
        let old = &self.newest[..];
        // Chunks of a stream share about as long a prefix as the two before them did.
        let guess = usize::from(self.last_pre).saturating_sub(16);
        let pre = common_prefix(old, chunk, guess);
        let suf = common_suffix(&old[pre..], &chunk[pre..]);
        self.last_pre = pre as u16;
        let shared = pre + suf;
        let delta = shared >= MIN_SHARED
            && shared * 4 >= old.len()
            && self.run < MAX_RUN
            && self.run_bytes + old.len() <= MAX_RUN_BYTES;
        let entry = if delta {
            self.run += 1;
            self.run_bytes += old.len();
            self.arena.push(&old[pre..old.len() - suf]);
            Entry {
                pre: pre as u16,
                suf: suf as u16,
                mid: (old.len() - shared) as u16,
            }
        } else {
            (self.run, self.run_bytes) = (0, 0);
            self.arena.push(old);
            Entry {
                pre: 0,
                suf: 0,
                mid: old.len() as u16,
            }
        };
        self.entries.push_back(entry);
        // The new chunk differs from the old only between the shared prefix and suffix.
        let newest = &mut self.newest;
        if newest.capacity() > 4 * chunk.len() && newest.capacity() > 4 * 1024 {
            *newest = chunk.to_vec();
            return;
        }
        let (old_end, new_end) = (newest.len() - suf, chunk.len() - suf);
        if new_end > old_end {
            newest.resize(chunk.len(), 0);
            newest.copy_within(old_end..old_end + suf, new_end);
        } else if new_end < old_end {
            newest.copy_within(old_end.., new_end);
            newest.truncate(chunk.len());
        }
        newest[pre..new_end].copy_from_slice(&chunk[pre..new_end]);
    }

    fn drop_front(&mut self, n: usize) {
        self.start += n as u64;
        self.len -= n;
        let mut n = n + self.head;
        while let Some(&front) = self.entries.front()
            && n >= front.len()
        {
            n -= front.len();
            self.entries.pop_front();
            self.arena.drop_front(front.mid());
        }
        self.head = n;
    }

    /// The kept bytes from `pos` (at most [`CATCH_UP_PIECE`]); `None` at the end or outside.
    pub fn bytes_at(&self, pos: u64) -> Option<Bytes> {
        if pos < self.start || pos >= self.end {
            return None;
        }
        let newest_at = self.end - self.newest.len() as u64;
        if pos >= newest_at {
            let from = usize::try_from(pos - newest_at).ok()?;
            let take = (self.newest.len() - from).min(CATCH_UP_PIECE);
            return Some(Bytes::copy_from_slice(&self.newest[from..from + take]));
        }
        let (mut index, chunk_at, mut arena_at) = self.locate(pos, newest_at);
        let skip = usize::try_from(pos - chunk_at).ok()?;
        let want = skip
            + usize::try_from(self.end - pos)
                .map_or(CATCH_UP_PIECE, |rest| rest.min(CATCH_UP_PIECE));
        let mut out = Vec::new();
        while out.len() < want {
            let Some(next) = self.rebuild_run(index, arena_at, &mut out) else {
                break;
            };
            (index, arena_at) = next;
        }
        out.truncate(want);
        Some(Bytes::from(out).slice(skip..))
    }

    /// The entry that holds `pos` (before the newest), where its chunk starts in the stream
    /// and where its middle starts in the arena; from whichever end is nearer.
    fn locate(&self, pos: u64, newest_at: u64) -> (usize, u64, usize) {
        if pos - self.start < newest_at - pos {
            let (mut index, mut chunk_at, mut arena_at) = (0, self.start - self.head as u64, 0);
            while let Some(&entry) = self.entries.get(index)
                && chunk_at + entry.len() as u64 <= pos
            {
                chunk_at += entry.len() as u64;
                arena_at += entry.mid();
                index += 1;
            }
            (index, chunk_at, arena_at)
        } else {
            let (mut index, mut chunk_at, mut arena_at) =
                (self.entries.len(), newest_at, self.arena.len);
            while chunk_at > pos
                && let Some(&entry) = index.checked_sub(1).and_then(|i| self.entries.get(i))
            {
                index -= 1;
                chunk_at -= entry.len() as u64;
                arena_at -= entry.mid();
            }
            (index, chunk_at, arena_at)
        }
    }

    /// Appends to `out` the chunks from entry `index` (its middle at `arena_at`) to the end of
    /// its run: the first keyframe, or the newest chunk. Returns where the next run starts,
    /// `None` after the newest.
    fn rebuild_run(
        &self,
        index: usize,
        arena_at: usize,
        out: &mut Vec<u8>,
    ) -> Option<(usize, usize)> {
        let (mut last, mut last_arena, mut deltas) = (index, arena_at, 0);
        while let Some(&entry) = self.entries.get(last)
            && !entry.is_key()
        {
            deltas += entry.len();
            last_arena += entry.mid();
            last += 1;
        }
        let key = self.entries.get(last).copied();
        let mut at = out.len() + deltas;
        let mut next_len = key.map_or(self.newest.len(), Entry::len);
        out.resize(at + next_len, 0);
        match key {
            Some(_) => self.arena.read(last_arena, &mut out[at..]),
            None => out[at..].copy_from_slice(&self.newest),
        }
        let mut arena_end = last_arena;
        for entry in self.entries.range(index..last).rev() {
            let this = at - entry.len();
            let (pre, mid, suf) = (entry.pre(), entry.mid(), entry.suf());
            arena_end -= mid;
            out.copy_within(at..at + pre, this);
            self.arena
                .read(arena_end, &mut out[this + pre..this + pre + mid]);
            out.copy_within(at + next_len - suf..at + next_len, this + pre + mid);
            (at, next_len) = (this, entry.len());
        }
        key.map(|key| (last + 1, last_arena + key.mid()))
    }

    /// Bytes held for the kept bytes (capacities), for the tests' budgets.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.arena.held()
            + self.newest.capacity()
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

/// Bytes in blocks filled in order, the oldest dropped first. Blocks are never reallocated:
/// a byte is copied in once, and an idle stream keeps at most one block's slack.
#[derive(Default)]
struct Arena {
    blocks: VecDeque<Vec<u8>>,
    /// Bytes of the first block already dropped.
    head: usize,
    /// A dropped full-size block, reused for the next one: a stream at its cap recycles its
    /// blocks instead of freeing and allocating one every few events.
    spare: Option<Vec<u8>>,
    len: usize,
}

impl Arena {
    fn push(&mut self, bytes: &[u8]) {
        self.len += bytes.len();
        if let Some(last) = self.blocks.back_mut()
            && last.capacity() - last.len() >= bytes.len()
        {
            last.extend_from_slice(bytes);
            return;
        }
        let mut rest = bytes;
        if let Some(last) = self.blocks.back_mut() {
            let fits = rest.len().min(last.capacity() - last.len());
            last.extend_from_slice(&rest[..fits]);
            rest = &rest[fits..];
        }
        if !rest.is_empty() {
            // Blocks double from MIN_BLOCK up to MAX_BLOCK: a short answer keeps little slack,
            // a long one takes few allocations.
            let previous = self.blocks.back().map_or(0, Vec::capacity);
            let size = (previous * 2).clamp(MIN_BLOCK, MAX_BLOCK).max(rest.len());
            let mut block = match self.spare.take() {
                Some(spare) if spare.capacity() >= size => spare,
                _ => Vec::with_capacity(size),
            };
            block.extend_from_slice(rest);
            self.blocks.push_back(block);
        }
    }

    fn drop_front(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            let Some(front) = self.blocks.front() else {
                break;
            };
            let left = front.len() - self.head;
            if n < left {
                self.head += n;
                break;
            }
            n -= left;
            self.head = 0;
            if let Some(mut dropped) = self.blocks.pop_front()
                && dropped.capacity() >= MAX_BLOCK
            {
                dropped.clear();
                self.spare = Some(dropped);
            }
        }
    }

    /// Fills `out` with the bytes from `at` (counted from the first byte kept).
    fn read(&self, at: usize, out: &mut [u8]) {
        let mut filled = 0;
        if at + out.len() > self.len / 2 {
            // Near the end: count back from the last block.
            let mut block_end = self.len + self.head;
            let mut first = self.blocks.len();
            let mut skip = 0;
            for (index, block) in self.blocks.iter().enumerate().rev() {
                block_end -= block.len();
                if block_end <= at + self.head {
                    (first, skip) = (index, at + self.head - block_end);
                    break;
                }
            }
            for block in self.blocks.range(first..) {
                filled += copy_part(&block[skip..], &mut out[filled..]);
                skip = 0;
                if filled == out.len() {
                    return;
                }
            }
            return;
        }
        let mut skip = at + self.head;
        for block in &self.blocks {
            if skip >= block.len() {
                skip -= block.len();
                continue;
            }
            filled += copy_part(&block[skip..], &mut out[filled..]);
            skip = 0;
            if filled == out.len() {
                return;
            }
        }
    }

    #[cfg(test)]
    fn held(&self) -> usize {
        self.blocks.iter().map(Vec::capacity).sum::<usize>()
            + self.blocks.capacity() * std::mem::size_of::<Vec<u8>>()
            + self.spare.as_ref().map_or(0, Vec::capacity)
    }
}

/// Copies what fits of `from` into `to`; returns how much.
fn copy_part(from: &[u8], to: &mut [u8]) -> usize {
    let n = from.len().min(to.len());
    to[..n].copy_from_slice(&from[..n]);
    n
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
        assert_eq!(
            (kept.start(), kept.end()),
            (model.start as u64, model.all.len() as u64)
        );
        assert_eq!(kept.len, model.all.len() - model.start);
        for pos in model.start..model.all.len() {
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
        for entry in &kept.entries {
            run = if entry.is_key() { 0 } else { run + 1 };
            longest = longest.max(run);
        }
        assert_eq!(longest, MAX_RUN);
        assert!(kept.entries.iter().filter(|entry| entry.is_key()).count() <= events / MAX_RUN + 1);
        assert_same(&kept, &model);
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
            kept.held() < 5 * 512,
            "{} bytes held for {appended}",
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
        assert!(
            kept.held() < 64 * 1024 + 2 * MAX_BLOCK + 4096,
            "{}",
            kept.held()
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
