package main

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/miekg/dns"
)

// maxChain is the most CNAME records one answer follows inside the zone.
const maxChain = 8

// errNoSOA is returned for a zone file without an SOA record.
var errNoSOA = errors.New("zone: no SOA record")

// zone is one parsed zone. It is never modified once built, so any number
// of lookups share it without locks; a reload builds a new one.
type zone struct {
	origin string   // the SOA's owner, canonical (lower case, fully qualified)
	file   string   // the file it came from
	sum    [32]byte // sha256 of the file's bytes
	soa    *dns.SOA
	// nodes maps each owner name (canonical) to its records by type.
	nodes map[string]rrsets
	// names holds every owner name and every name between an owner and
	// the origin, so an empty non-terminal is in names but not in nodes.
	names map[string]bool
	// cuts holds the delegation points: names below the origin with NS
	// records.
	cuts map[string]bool
}

// rrsets are the records of one name by type.
type rrsets map[uint16][]dns.RR

// loadZone reads and parses the zone file at path. origin, when not empty,
// is the default $ORIGIN and must be the SOA's owner.
func loadZone(path, origin string) (*zone, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("zone: %w", err)
	}
	return parseZone(data, path, origin)
}

// lineReader is the io.ByteReader the zone parser reads through, so that
// the line a record ends on is known when the parser returns it.
type lineReader struct {
	r        *bytes.Reader
	newlines int
	last     byte
}

func (l *lineReader) Read(p []byte) (int, error) {
	// The parser uses ReadByte; Read exists for io.Reader only.
	if len(p) == 0 {
		return 0, nil
	}
	b, err := l.ReadByte()
	if err != nil {
		return 0, err
	}
	p[0] = b
	return 1, nil
}

func (l *lineReader) ReadByte() (byte, error) {
	b, err := l.r.ReadByte()
	if err != nil {
		return 0, err
	}
	if b == '\n' {
		l.newlines++
	}
	l.last = b
	return b, nil
}

// line is the line of the record the parser has just returned.
func (l *lineReader) line() int {
	if l.last == '\n' {
		return l.newlines
	}
	return l.newlines + 1
}

var _ io.ByteReader = (*lineReader)(nil)

// parseZone parses a zone file's bytes; file names it in errors. It refuses
// a file that does not parse, has no SOA or more than one, holds a record
// outside the SOA's origin or of a class other than IN, or a CNAME beside
// other data at the same name.
func parseZone(data []byte, file, origin string) (*zone, error) {
	if origin != "" {
		origin = dns.Fqdn(origin)
		if _, ok := dns.IsDomainName(origin); !ok {
			return nil, fmt.Errorf("zone: origin %q is not a domain name", origin)
		}
	}
	lr := &lineReader{r: bytes.NewReader(data)}
	zp := dns.NewZoneParser(lr, origin, file)
	zp.SetIncludeAllowed(false)
	type entry struct {
		rr   dns.RR
		line int
	}
	var entries []entry
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		entries = append(entries, entry{rr, lr.line()})
	}
	if err := zp.Err(); err != nil {
		return nil, fmt.Errorf("zone: %w", err)
	}
	at := func(e entry) string { return fmt.Sprintf("%s:%d", file, e.line) }

	z := &zone{
		file:  file,
		sum:   sha256.Sum256(data),
		nodes: make(map[string]rrsets),
		names: make(map[string]bool),
		cuts:  make(map[string]bool),
	}
	for _, e := range entries {
		soa, ok := e.rr.(*dns.SOA)
		if !ok {
			continue
		}
		if z.soa != nil {
			return nil, fmt.Errorf("zone: %s: a second SOA record (%s); a file holds one zone", at(e), soa.Hdr.Name)
		}
		z.soa = soa
		z.origin = dns.CanonicalName(soa.Hdr.Name)
	}
	if z.soa == nil {
		return nil, fmt.Errorf("%w in %s", errNoSOA, file)
	}
	if origin != "" && dns.CanonicalName(origin) != z.origin {
		return nil, fmt.Errorf("zone: %s: the SOA is for %s, not the origin %s in the settings", file, z.origin, origin)
	}
	owners := make(map[string]entry) // an entry of each name, for errors
	for _, e := range entries {
		h := e.rr.Header()
		name := dns.CanonicalName(h.Name)
		if h.Class != dns.ClassINET {
			return nil, fmt.Errorf("zone: %s: %s has class %s; only IN is served", at(e), h.Name, dns.ClassToString[h.Class])
		}
		if !dns.IsSubDomain(z.origin, name) {
			return nil, fmt.Errorf("zone: %s: %s is outside the zone %s", at(e), h.Name, z.origin)
		}
		sets := z.nodes[name]
		if sets == nil {
			sets = make(rrsets)
			z.nodes[name] = sets
			owners[name] = e
		}
		sets[h.Rrtype] = append(sets[h.Rrtype], e.rr)
		if h.Rrtype == dns.TypeNS && name != z.origin {
			z.cuts[name] = true
		}
		for n := name; ; n = parent(n) {
			if z.names[n] {
				break
			}
			z.names[n] = true
			if n == z.origin || n == "." {
				break
			}
		}
	}
	for name, sets := range z.nodes {
		cn := sets[dns.TypeCNAME]
		if len(cn) == 0 {
			continue
		}
		if len(cn) > 1 {
			return nil, fmt.Errorf("zone: %s: %s has %d CNAME records; a name has at most one", at(owners[name]), name, len(cn))
		}
		for t := range sets {
			if t != dns.TypeCNAME && t != dns.TypeRRSIG && t != dns.TypeNSEC {
				return nil, fmt.Errorf("zone: %s: %s has a CNAME and %s records; a CNAME stands alone", at(owners[name]), name, dns.TypeToString[t])
			}
		}
	}
	return z, nil
}

// parent strips the first label of the canonical name n; the root is its
// own parent.
func parent(n string) string {
	if n == "." {
		return n
	}
	i, end := dns.NextLabel(n, 0)
	if end || i >= len(n) {
		return "."
	}
	return n[i:]
}

// result is a lookup's answer before it becomes a message.
type result struct {
	rcode             int
	authoritative     bool
	answer, ns, extra []dns.RR
}

// lookup answers the question for qname and qtype (class IN) from the zone.
// It never modifies the zone: the records it returns are copies.
func (z *zone) lookup(qname string, qtype uint16) result {
	name := dns.CanonicalName(qname)
	if !dns.IsSubDomain(z.origin, name) {
		return result{rcode: dns.RcodeRefused}
	}
	if cut, ok := z.cutAt(name, qtype); ok {
		return z.referral(cut)
	}
	r := result{rcode: dns.RcodeSuccess, authoritative: true}
	z.resolve(&r, qname, name, qtype)
	z.additional(&r, r.answer)
	return r
}

// cutAt returns the topmost delegation point at or above name, if any. The
// parent answers DS at a cut itself.
func (z *zone) cutAt(name string, qtype uint16) (string, bool) {
	if len(z.cuts) == 0 {
		return "", false
	}
	cut, found := "", false
	for n := name; n != z.origin && n != "."; n = parent(n) {
		if z.cuts[n] && (n != name || qtype != dns.TypeDS) {
			cut, found = n, true
		}
	}
	return cut, found
}

// referral answers a name at or below the delegation point cut: the
// delegation's NS records in authority, and the glue the zone holds for
// them in additional. It is not authoritative.
func (z *zone) referral(cut string) result {
	r := result{rcode: dns.RcodeSuccess, ns: copyRRs(z.nodes[cut][dns.TypeNS], "")}
	z.additional(&r, r.ns)
	return r
}

// resolve adds to r the answer for name (asked as owner): its records of
// qtype, or its CNAME and the chain from it inside the zone, or the SOA
// for NODATA and NXDOMAIN (RFC 1034 §4.3.2, RFC 2308, RFC 6604).
func (z *zone) resolve(r *result, owner, name string, qtype uint16) {
	seen := make(map[string]bool)
	for hop := 0; ; hop++ {
		sets, exists := z.find(name)
		if !exists {
			r.rcode = dns.RcodeNameError
			r.ns = []dns.RR{z.soaCopy()}
			return
		}
		if rrs := sets[qtype]; len(rrs) > 0 {
			r.answer = append(r.answer, copyRRs(rrs, owner)...)
			return
		}
		if qtype == dns.TypeANY && len(sets) > 0 {
			for _, rrs := range sets {
				r.answer = append(r.answer, copyRRs(rrs, owner)...)
			}
			return
		}
		cn := sets[dns.TypeCNAME]
		if len(cn) == 0 || qtype == dns.TypeCNAME {
			// NODATA, at a name with records or an empty non-terminal.
			r.ns = []dns.RR{z.soaCopy()}
			return
		}
		r.answer = append(r.answer, copyRRs(cn, owner)...)
		seen[name] = true
		owner = cn[0].(*dns.CNAME).Target
		name = dns.CanonicalName(owner)
		if hop+1 >= maxChain || seen[name] || !dns.IsSubDomain(z.origin, name) {
			return
		}
		if _, ok := z.cutAt(name, qtype); ok {
			return
		}
	}
}

// find returns the records for name: its own, or those of the wildcard at
// its closest encloser (RFC 4592). exists is false when the name does not
// exist; an empty non-terminal exists with no records.
func (z *zone) find(name string) (sets rrsets, exists bool) {
	if s, ok := z.nodes[name]; ok {
		return s, true
	}
	if z.names[name] {
		return nil, true
	}
	ce := parent(name)
	for !z.names[ce] && ce != "." {
		ce = parent(ce)
	}
	if s, ok := z.nodes["*."+ce]; ok && z.names[ce] {
		return s, true
	}
	return nil, false
}

// additional adds to r.extra the zone's A and AAAA records for the targets
// of the NS, MX and SRV records in rrs.
func (z *zone) additional(r *result, rrs []dns.RR) {
	done := make(map[string]bool)
	for _, rr := range rrs {
		var target string
		switch rr := rr.(type) {
		case *dns.NS:
			target = rr.Ns
		case *dns.MX:
			target = rr.Mx
		case *dns.SRV:
			target = rr.Target
		default:
			continue
		}
		t := dns.CanonicalName(target)
		if done[t] || !dns.IsSubDomain(z.origin, t) {
			continue
		}
		done[t] = true
		sets := z.nodes[t]
		r.extra = append(r.extra, copyRRs(sets[dns.TypeA], "")...)
		r.extra = append(r.extra, copyRRs(sets[dns.TypeAAAA], "")...)
	}
}

func (z *zone) soaCopy() dns.RR { return dns.Copy(z.soa) }

// copyRRs copies rrs, with the owner name replaced by owner unless it is
// empty, so an answer never shares records with the zone.
func copyRRs(rrs []dns.RR, owner string) []dns.RR {
	out := make([]dns.RR, 0, len(rrs))
	for _, rr := range rrs {
		c := dns.Copy(rr)
		if owner != "" {
			c.Header().Name = owner
		}
		out = append(out, c)
	}
	return out
}

// serial is the zone's SOA serial, for logs.
func (z *zone) serial() uint32 { return z.soa.Serial }

// describe names the zone for logs.
func (z *zone) describe() string {
	return fmt.Sprintf("%s serial %d (%d names)", z.origin, z.serial(), len(z.nodes))
}
