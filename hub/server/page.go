package server

import (
	"encoding/base64"
	"sort"

	"google.golang.org/protobuf/proto"

	"github.com/spillway-io/spillway/pkg/fleetpb"
)

// The admin lists come a page at a time (AIP-158): at most page_size entries, and fewer once a
// page holds about fleetpb.ViewPartBytes, so that a list fits any client's default message
// limit whatever the size of the fleet.
const (
	defaultPageSize = 500
	maxPageSize     = 1000
	// maxPageToken bounds a page token: the base64 of one key (a cluster ID or namespace/name).
	maxPageToken = 512
)

// pageRequest is what every paged list request carries.
type pageRequest interface {
	GetPageSize() int32
	GetPageToken() string
}

// listPage returns the entries of a page: build of each key after the page token's, in the
// order of keys (which name sorts as strings), until the page is full; and the token of the next page,
// empty on the last. A key whose entry went away meanwhile (build says so) is skipped.
func listPage[K any, M proto.Message](req pageRequest, keys []K, name func(K) string, build func(K) (M, bool)) ([]M, string, error) {
	size := int(req.GetPageSize())
	switch {
	case size < 0 || size > maxPageSize:
		return nil, "", invalid("page_size", "%d: want 1 to %d, or 0 for %d", size, maxPageSize, defaultPageSize)
	case size == 0:
		size = defaultPageSize
	}
	after := ""
	if tok := req.GetPageToken(); tok != "" {
		b, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil || len(tok) > maxPageToken || len(b) == 0 {
			return nil, "", invalid("page_token", "not a token this hub gave: take next_page_token from the previous response")
		}
		after = string(b)
	}
	i := sort.Search(len(keys), func(i int) bool { return name(keys[i]) > after })
	var out []M
	bytes := 0
	for ; i < len(keys) && len(out) < size && bytes < fleetpb.ViewPartBytes; i++ {
		m, ok := build(keys[i])
		if !ok {
			continue
		}
		out = append(out, m)
		bytes += proto.Size(m)
	}
	if i >= len(keys) {
		return out, "", nil
	}
	return out, base64.RawURLEncoding.EncodeToString([]byte(name(keys[i-1]))), nil
}
