package stores

import "testing"

func TestBumpStalls(t *testing.T) {
	same := func(n int, v string) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = v
		}
		return out
	}
	moving := make([]string, 3*BumpTries)
	for i := range moving {
		moving[i] = string(rune('a' + i%26))
	}
	tests := []struct {
		name  string
		reads []string
		want  int // the read (1-based) that gives up; 0: none does
	}{
		{"one read", []string{"5"}, 0},
		{"a counter that keeps moving", moving, 0},
		{"a counter that stays", same(BumpTries+5, "5"), BumpTries + 1},
		{"absent that stays", same(BumpTries+1, ""), BumpTries + 1},
		{"stalls count across moves", append(append(same(BumpTries/2+1, "1"), same(BumpTries, "2")...), "3"), BumpTries + 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s BumpStalls
			got := 0
			for i, r := range tt.reads {
				if s.Read(r) {
					got = i + 1
					break
				}
			}
			if got != tt.want {
				t.Errorf("gave up at read %d, want %d", got, tt.want)
			}
		})
	}
}
