// Live heap allocations by requested size, for bench/live_alloc.sh: an LD_PRELOAD shim over
// glibc's malloc family that records every live block's size (and, for the sizes listed in
// LIVE_SIZES=a,b,..., a backtrace). Touching /tmp/live-alloc/trig-PID makes it write
// /tmp/live-alloc/live-PID-N: "size count" lines, "BT size addr..." lines for the listed sizes,
// mallinfo2's totals ("MI ...") and "big count bytes" for blocks of 70,000 bytes and more;
// live-PID-N.all: every live block ("address size", for live_pages.py); live-PID-N.allc: the
// blocks allocated so far, by size (70000: that and more).
// Build: gcc -O2 -shared -fPIC -o live_alloc.so live_alloc.c -lpthread
#define _GNU_SOURCE
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <pthread.h>
#include <malloc.h>
#include <fcntl.h>
#include <execinfo.h>
#include <sys/mman.h>
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
extern void *__libc_memalign(size_t, size_t);
#define CAP (1u<<23)
static uintptr_t *keys; static uint32_t *vals;
static volatile int lk;
static void lock(void){ while(__sync_lock_test_and_set(&lk,1)) ; }
static void unlock(void){ __sync_lock_release(&lk); }
static int ready;
static uint64_t allc[70001];
#define BT 10
static uintptr_t (*bts)[BT];
static __thread int inbt;
static int want[70000];

static void init(void){ if(keys) return; keys=mmap(0,CAP*sizeof(uintptr_t),PROT_READ|PROT_WRITE,MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE,-1,0); vals=mmap(0,CAP*sizeof(uint32_t),PROT_READ|PROT_WRITE,MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE,-1,0); bts=mmap(0,(size_t)CAP*sizeof(*bts),PROT_READ|PROT_WRITE,MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE,-1,0);
 const char*w=getenv("LIVE_SIZES"); while(w&&*w){ int v=atoi(w); if(v>0&&v<70000) want[v]=1; while(*w&&*w!=',') w++; if(*w) w++; }
 ready=1; }
static inline uint32_t h(uintptr_t p){ return (uint32_t)((p>>4)*0x9E3779B97F4A7C15ull>>41) & (CAP-1); }
#define TOMB ((uintptr_t)1)
static void put(void*p,size_t s){ if(!p||!ready) return; __atomic_fetch_add(&allc[s<70000?s:70000],1,__ATOMIC_RELAXED); void*b[BT+2]; int nb=0; if(s<70000&&want[s]&&!inbt){ inbt=1; nb=backtrace(b,BT+2); inbt=0; }
 lock(); uint32_t i=h((uintptr_t)p); while(keys[i] && keys[i]!=TOMB) i=(i+1)&(CAP-1); keys[i]=(uintptr_t)p; vals[i]=(uint32_t)s; for(int k=0;k<BT;k++) bts[i][k]= (k+2<nb)?(uintptr_t)b[k+2]:0; unlock(); }
static void del(void*p){ if(!p||!ready) return; lock(); uint32_t i=h((uintptr_t)p); while(keys[i]){ if(keys[i]==(uintptr_t)p){ keys[i]=TOMB; break;} i=(i+1)&(CAP-1);} unlock(); }
void *malloc(size_t s){ void*p=__libc_malloc(s); put(p,s); return p; }
void *calloc(size_t n,size_t s){ void*p=__libc_calloc(n,s); put(p,n*s); return p; }
void *realloc(void*o,size_t s){ del(o); void*p=__libc_realloc(o,s); if(p) put(p,s); else if(o && s) put(o,0); return p; }
void free(void*p){ del(p); __libc_free(p); }
void *memalign(size_t a,size_t s){ void*p=__libc_memalign(a,s); put(p,s); return p; }
void *aligned_alloc(size_t a,size_t s){ return memalign(a,s); }
int posix_memalign(void**r,size_t a,size_t s){ void*p=__libc_memalign(a,s); if(!p) return 12; put(p,s); *r=p; return 0; }
static void dump(const char*path){
  static uint64_t cnt[70000]; static uint64_t big; static uint64_t bigbytes; memset(cnt,0,sizeof cnt); big=0; bigbytes=0;
  lock(); for(uint32_t i=0;i<CAP;i++){ if(keys[i]>TOMB){ uint32_t s=vals[i]; if(s<70000) cnt[s]++; else {big++; bigbytes+=s;} } } unlock();
  int fd=open(path,O_WRONLY|O_CREAT|O_TRUNC,0644); char b[64];
  for(int s=0;s<70000;s++) if(cnt[s]){ int n=snprintf(b,64,"%d %lu\n",s,(unsigned long)cnt[s]); write(fd,b,n);} 
  { char bb[512]; lock(); for(uint32_t i=0;i<CAP;i++){ if(keys[i]>TOMB && vals[i]<70000 && want[vals[i]] && bts[i][0]){ int m=snprintf(bb,512,"BT %u",vals[i]); for(int k=0;k<BT;k++) m+=snprintf(bb+m,512-m," %lx",(unsigned long)bts[i][k]); bb[m++]='\n'; write(fd,bb,m);} } unlock(); }
  { struct mallinfo2 mi=mallinfo2(); char bb[256]; int m=snprintf(bb,256,"MI arena %zu hblkhd %zu uord %zu ford %zu keep %zu ordblks %zu fsmblks %zu\n",mi.arena,mi.hblkhd,mi.uordblks,mi.fordblks,mi.keepcost,mi.ordblks,mi.fsmblks); write(fd,bb,m); }
  int n=snprintf(b,64,"big %lu %lu\n",(unsigned long)big,(unsigned long)bigbytes); write(fd,b,n); close(fd);
}
static void dumpall(const char*path){
  int fd=open(path,O_WRONLY|O_CREAT|O_TRUNC,0644); char b[64];
  lock(); for(uint32_t i=0;i<CAP;i++){ if(keys[i]>TOMB){ int n=snprintf(b,64,"%lx %u\n",(unsigned long)keys[i],vals[i]); write(fd,b,n);} } unlock(); close(fd);
}
static void dumpallc(const char*path){
  int fd=open(path,O_WRONLY|O_CREAT|O_TRUNC,0644); char b[64];
  for(int i=0;i<=70000;i++) if(allc[i]){ int n=snprintf(b,64,"%d %lu\n",i,(unsigned long)allc[i]); write(fd,b,n);} close(fd);
}
static void *watch(void*a){ char trig[128],out[128]; int k=0; for(;;){ usleep(100000); snprintf(trig,128,"/tmp/live-alloc/trig-%d",getpid()); if(access(trig,F_OK)==0){ unlink(trig); snprintf(out,128,"/tmp/live-alloc/live-%d-%d",getpid(),k++); dump(out); strcat(out,".all"); dumpall(out); strcat(out,"c"); dumpallc(out);} } return 0; }
__attribute__((constructor)) static void ctor(void){ init(); pthread_t t; pthread_create(&t,0,watch,0); }
