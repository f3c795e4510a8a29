// What keeping a relayed chunk costs this machine's memory, whatever the code around it
// (bench/RESULTS.md, "keep12"). 100 streams take turns receiving a 4,400-byte chunk (the bulk
// event of scenario (d)); between two chunks of a stream, 20 KB of other memory is written,
// about what the kernel and hyper touch per relayed event. Per chunk, timed alone:
//   none     nothing kept (the loop's own cost);
//   compare  the chunk compared with the stream's previous one, which differs only near the
//            end, and the 20 differing bytes written (what a delta coding like
//            src/state/resume/kept.rs must read and write);
//   copy     the chunk copied whole into the stream's 1 MiB ring (memcpy);
//   stream   the same copy with non-temporal stores (no read of the destination first).
// Build and run: cc -O2 -o /tmp/keep_mem bench/keep_mem.c && taskset -c 1 /tmp/keep_mem
#include <emmintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { STREAMS = 100, CHUNK = 4400, EVENTS = 400, RING = 1 << 20, OTHER = 20480, THRASH = 4 << 20 };

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static double run(int mode) {
    static char *previous[STREAMS], *ring[STREAMS];
    static size_t at[STREAMS];
    char *thrash = malloc(THRASH), *incoming = malloc(CHUNK * STREAMS);
    if (!thrash || !incoming) exit(1);
    memset(thrash, 1, THRASH);
    memset(incoming, 'a', CHUNK * STREAMS);
    for (int s = 0; s < STREAMS; s++) {
        previous[s] = malloc(CHUNK);
        ring[s] = malloc(RING);
        if (!previous[s] || !ring[s]) exit(1);
        memset(previous[s], 'a', CHUNK);
        memset(ring[s], 0, RING);
        at[s] = 0;
    }
    volatile long sink = 0;
    double total = 0;
    for (int e = 0; e < EVENTS; e++) {
        for (int s = 0; s < STREAMS; s++) {
            memset(thrash + ((size_t)(e * STREAMS + s) * OTHER) % (THRASH - OTHER), e, OTHER);
            char *chunk = incoming + (size_t)s * CHUNK;
            chunk[CHUNK - 10] = (char)e;
            for (int i = 0; i < CHUNK; i += 64) sink += chunk[i]; // just received: in the cache
            double t0 = now();
            if (mode == 1) {
                sink += memcmp(previous[s], chunk, CHUNK - 20);
                memcpy(ring[s] + at[s], previous[s] + CHUNK - 20, 20);
                at[s] = (at[s] + 20) % (RING - 64);
                memcpy(previous[s] + CHUNK - 20, chunk + CHUNK - 20, 20);
            } else if (mode >= 2) {
                if (at[s] + CHUNK + 64 > RING) at[s] = 0;
                char *to = ring[s] + at[s];
                if (mode == 2) {
                    memcpy(to, chunk, CHUNK);
                } else {
                    for (int i = 0; i + 16 <= CHUNK; i += 16)
                        _mm_stream_si128((__m128i *)(to + i), _mm_loadu_si128((__m128i *)(chunk + i)));
                    _mm_sfence();
                }
                at[s] += (CHUNK + 15) & ~15;
            }
            total += now() - t0;
        }
    }
    for (int s = 0; s < STREAMS; s++) {
        free(previous[s]);
        free(ring[s]);
    }
    free(thrash);
    free(incoming);
    return total * 1e9 / (EVENTS * STREAMS);
}

int main(void) {
    const char *names[] = {"none", "compare", "copy", "stream"};
    for (int pass = 0; pass < 2; pass++)
        for (int mode = 0; mode < 4; mode++)
            printf("pass %d  %-8s %7.1f ns per chunk\n", pass + 1, names[mode], run(mode));
    return 0;
}
