package authz

import (
	"strings"
	"unicode/utf8"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// headersPath are the field numbers from a CheckRequest to the entries of
// its header map: attributes (1), request (4), http (2), headers (3).
var headersPath = [...]protowire.Number{1, 4, 2, 3}

// nested is the number of messages on headersPath: attributes, request
// and http.
const nested = len(headersPath) - 1

// unmarshalCheck decodes b into req as proto.Unmarshal does, result and
// error alike, at about half the cost: protobuf-go decodes a map by
// reflection, and the header map (a dozen entries from Envoy) costs more
// than the rest of the request. When b has the shape Envoy sends (one
// attributes, request and http message each, every header entry a valid
// UTF-8 key and value and nothing else), the entries are decoded here and
// the rest of b, without them, by proto.Unmarshal. Any other input, and
// any input that fails, is decoded again by proto.Unmarshal alone, which
// gives its result and its error.
func unmarshalCheck(b []byte, req *authv3.CheckRequest) error {
	var (
		s    headerScan
		room [32]headerEntry
	)
	if entries, ok := s.scan(b, room[:0]); ok {
		if headers, ok := decodeHeaders(b, entries); ok {
			pool := mem.DefaultBufferPool()
			buf := pool.Get(len(b))
			err := proto.Unmarshal(s.strip((*buf)[:0], b, entries), req)
			pool.Put(buf)
			if err == nil {
				req.GetAttributes().GetRequest().GetHttp().Headers = headers
				return nil
			}
		}
	}
	return proto.Unmarshal(b, req)
}

// headerScan is where the messages on headersPath are in a CheckRequest's
// bytes, as offsets into them.
type headerScan struct {
	// field[d] is where the field holding the message at depth d
	// (attributes, request, http) starts: its tag; content[d] is the
	// message's own bytes, which end where the field ends.
	field   [nested]int
	content [nested][2]int
}

// headerEntry is one field of the header map: its tag at field, its
// content (the map entry) from content to end; key and value are where
// decodeHeaders found them in b.
type headerEntry struct {
	field, content, end int
	key, value          [2]int
}

// scan finds the messages on headersPath in b, and returns entries with
// the header entries appended. It reports false when a message on the path is missing, appears more than
// once (protobuf-go would merge them) or has another wire type, when a
// field on the way does not parse, or when there is no header entry.
func (s *headerScan) scan(b []byte, entries []headerEntry) ([]headerEntry, bool) {
	lo, hi := 0, len(b)
	for d, num := range headersPath {
		found := false
		for i := lo; i < hi; {
			n, typ, tl := protowire.ConsumeTag(b[i:hi])
			if tl < 0 {
				return nil, false
			}
			vl := protowire.ConsumeFieldValue(n, typ, b[i+tl:hi])
			if vl < 0 {
				return nil, false
			}
			if n == num {
				if typ != protowire.BytesType || d < nested && found {
					return nil, false
				}
				found = true
				_, ll := protowire.ConsumeVarint(b[i+tl : hi])
				start, end := i+tl+ll, i+tl+vl
				if d == nested {
					entries = append(entries, headerEntry{field: i, content: start, end: end})
				} else {
					s.field[d], s.content[d] = i, [2]int{start, end}
				}
			}
			i += tl + vl
		}
		if !found {
			return nil, false
		}
		if d < nested {
			lo, hi = s.content[d][0], s.content[d][1]
		}
	}
	return entries, true
}

// strip appends b without the header entries (from scan) to dst: the messages on
// headersPath keep their other fields, in their order, under lengths
// written anew.
func (s *headerScan) strip(dst, b []byte, entries []headerEntry) []byte {
	var size [nested]int
	size[nested-1] = s.content[nested-1][1] - s.content[nested-1][0]
	for _, e := range entries {
		size[nested-1] -= e.end - e.field
	}
	for d := nested - 2; d >= 0; d-- {
		old := s.content[d+1][1] - s.field[d+1]
		size[d] = s.content[d][1] - s.content[d][0] - old +
			protowire.SizeTag(headersPath[d+1]) + protowire.SizeBytes(size[d+1])
	}
	prev := 0
	for d := range nested {
		dst = append(dst, b[prev:s.field[d]]...)
		dst = protowire.AppendTag(dst, headersPath[d], protowire.BytesType)
		dst = protowire.AppendVarint(dst, uint64(size[d]))
		prev = s.content[d][0]
	}
	for _, e := range entries {
		dst = append(dst, b[prev:e.field]...)
		prev = e.end
	}
	// The rest of http, then of request, attributes and the CheckRequest:
	// each message ends where the field holding it ends, so they follow
	// one another in b.
	return append(dst, b[prev:]...)
}

// decodeHeaders decodes the header entries of b into a map, as
// protobuf-go would: in order, a later key replacing an earlier one. It
// reports false for an entry protobuf-go might read otherwise (or refuse):
// one that lacks its key or value, repeats one, holds any other field or
// invalid UTF-8. The values share one string, one allocation instead of
// one each; every identity made from a header is a new string.
func decodeHeaders(b []byte, entries []headerEntry) (map[string]string, bool) {
	size := 0
	for i := range entries {
		e := &entries[i]
		var ok bool
		if e.key, e.value, ok = mapEntry(b, e.content, e.end); !ok {
			return nil, false
		}
		size += e.value[1] - e.value[0]
	}
	var sb strings.Builder
	sb.Grow(size)
	for _, e := range entries {
		sb.Write(b[e.value[0]:e.value[1]])
	}
	values := sb.String()
	m := make(map[string]string, len(entries))
	at := 0
	for _, e := range entries {
		n := e.value[1] - e.value[0]
		m[headerName(b[e.key[0]:e.key[1]])] = values[at : at+n]
		at += n
	}
	return m, true
}

// mapEntry returns where the key (field 1) and the value (field 2) of the
// map entry b[start:end] are in b, when it holds exactly those two
// strings, valid UTF-8, once each.
func mapEntry(b []byte, start, end int) (k, v [2]int, ok bool) {
	var seen uint8
	for i := start; i < end; {
		num, typ, n := protowire.ConsumeTag(b[i:end])
		if n < 0 || typ != protowire.BytesType || num != 1 && num != 2 || seen&(1<<num) != 0 {
			return k, v, false
		}
		val, m := protowire.ConsumeBytes(b[i+n : end])
		if m < 0 || !utf8.Valid(val) {
			return k, v, false
		}
		seen |= 1 << num
		at := [2]int{i + n + m - len(val), i + n + m}
		if num == 1 {
			k = at
		} else {
			v = at
		}
		i += n + m
	}
	return k, v, seen == 1<<1|1<<2
}

// headerName returns k as a string, without allocating for the names
// Envoy sends with most requests.
func headerName(k []byte) string {
	switch string(k) {
	case ":authority":
		return ":authority"
	case ":method":
		return ":method"
	case ":path":
		return ":path"
	case ":scheme":
		return ":scheme"
	case "accept":
		return "accept"
	case "accept-encoding":
		return "accept-encoding"
	case "accept-language":
		return "accept-language"
	case "authorization":
		return "authorization"
	case "content-length":
		return "content-length"
	case "content-type":
		return "content-type"
	case "cookie":
		return "cookie"
	case "user-agent":
		return "user-agent"
	case "x-envoy-expected-rq-timeout-ms":
		return "x-envoy-expected-rq-timeout-ms"
	case "x-envoy-internal":
		return "x-envoy-internal"
	case "x-forwarded-for":
		return "x-forwarded-for"
	case "x-forwarded-proto":
		return "x-forwarded-proto"
	case "x-request-id":
		return "x-request-id"
	case degradedKey:
		return degradedKey
	}
	return string(k)
}
