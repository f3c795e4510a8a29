"""Which heap pages of a process are resident, against its live blocks (bench/live_alloc.sh).

live_pages.py PID BLOCKS STREAMS: BLOCKS is a live-PID-N.all dump of live_alloc.so. Reads the
process's writable heap mappings from /proc/PID/maps and their present pages from
/proc/PID/pagemap; prints the present pages, those holding no live byte, the live bytes on
present pages, and for blocks of 4 KiB and more how many of their first, inner and last pages
are present (per stream).
"""
import sys,struct,bisect,collections
pid,allf,n=sys.argv[1],sys.argv[2],int(sys.argv[3])
blocks=[]
for l in open(allf):
    a,s=l.split(); blocks.append((int(a,16),int(s)))
blocks.sort()
maps=[]
for l in open(f'/proc/{pid}/maps'):
    p=l.split(); lo,hi=[int(x,16) for x in p[0].split('-')]
    if p[1].startswith('rw') and (len(p)<6 or p[5]=='[heap]'): maps.append((lo,hi))
starts=[b[0] for b in blocks]
used=[]
for lo,hi in maps:
    i=bisect.bisect_left(starts,lo)
    if i<len(blocks) and blocks[i][0]<hi: used.append((lo,hi))
PG=4096
pm=open(f'/proc/{pid}/pagemap','rb')
present=set()
for lo,hi in used:
    pm.seek(lo//PG*8); data=pm.read((hi-lo)//PG*8)
    for k in range((hi-lo)//PG):
        v=struct.unpack_from('<Q',data,k*8)[0]
        if v>>63 &1 or v>>62&1: present.add(lo//PG+k)
# page -> live bytes on it
live=collections.Counter(); cls=collections.defaultdict(collections.Counter)
tot_pages_by_size=collections.Counter(); pres_by_size=collections.Counter()
for a,s in blocks:
    lo=a-8; hi=a+max(s,8)
    for pg in range(lo//PG,(hi-1)//PG+1):
        ov=min(hi,(pg+1)*PG)-max(lo,pg*PG)
        live[pg]+=ov
        if s>=4096:
            kind='first' if pg==lo//PG else ('last' if pg==(hi-1)//PG else 'inner')
            tot_pages_by_size[(s,kind)]+=1
            if pg in present: pres_by_size[(s,kind)]+=1
inrange=set()
for lo,hi in used: inrange.update(range(lo//PG,hi//PG))
pres=len(present); nolive=sum(1 for p in present if live[p]==0)
sparse=sum(1 for p in present if 0<live[p]<1024)
print(f"heap ranges {len(used)} pages {len(inrange)} present {pres} ({pres*4/n:.2f} KiB/stream incl. base)")
print(f"present pages with no live byte: {nolive} ({nolive*4/n:.2f} KiB/stream); with <1 KiB live: {sparse} ({sparse*4/n:.2f} KiB/stream)")
print(f"live bytes on present pages: {sum(live[p] for p in present)/n:.0f} B/stream; live bytes total {sum(s for a,s in blocks)/n:.0f}")
for s in sorted(tot_pages_by_size):
    if tot_pages_by_size[s]>=n//4: print(f"  blocks of {s[0]} {s[1]:5s}: {tot_pages_by_size[s]/n:.2f} pages/stream, {pres_by_size[s]/n:.2f} present")
