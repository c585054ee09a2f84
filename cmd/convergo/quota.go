package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
)

// quotaFlag collects --quota PATTERN=RECORDS/BYTES[/COLLECTIONS] values
// (comma-separated or repeated; 0 is no bound):
// "tenant42.*=100000/1073741824/50".
type quotaFlag []engine.Quota

func (q *quotaFlag) String() string {
	parts := make([]string, len(*q))
	for i, x := range *q {
		parts[i] = fmt.Sprintf("%s=%d/%d", x.Pattern, x.MaxRecords, x.MaxBytes)
		if x.MaxCollections > 0 {
			parts[i] += fmt.Sprintf("/%d", x.MaxCollections)
		}
	}
	return strings.Join(parts, ",")
}

func (q *quotaFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		pattern, bounds, ok := strings.Cut(s, "=")
		nums := strings.Split(bounds, "/")
		if !ok || len(nums) < 2 || len(nums) > 3 {
			return fmt.Errorf("quota %q: want PATTERN=RECORDS/BYTES[/COLLECTIONS]", s)
		}
		records, bytes := nums[0], nums[1]
		if err := crdt.ValidatePattern(pattern); err != nil {
			return fmt.Errorf("quota %q: %w", s, err)
		}
		r, err := strconv.ParseInt(records, 10, 64)
		if err != nil || r < 0 {
			return fmt.Errorf("quota %q: records %q is not a count", s, records)
		}
		b, err := strconv.ParseInt(bytes, 10, 64)
		if err != nil || b < 0 {
			return fmt.Errorf("quota %q: bytes %q is not a count", s, bytes)
		}
		var n int64
		if len(nums) == 3 {
			if n, err = strconv.ParseInt(nums[2], 10, 64); err != nil || n < 0 {
				return fmt.Errorf("quota %q: collections %q is not a count", s, nums[2])
			}
		}
		*q = append(*q, engine.Quota{Pattern: pattern, MaxRecords: r, MaxBytes: b, MaxCollections: n})
	}
	return nil
}
