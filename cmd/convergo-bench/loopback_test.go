package main

import (
	"slices"
	"testing"
)

func TestMaskCPUs(t *testing.T) {
	for _, tc := range []struct {
		mask string
		want []string
	}{
		{"0", nil},
		{"00000000", nil},
		{"2", []string{"1"}},
		{"3", []string{"0", "1"}},
		{"00000010", []string{"4"}},
		{"00000001,00000000", []string{"32"}},
		{"a", []string{"1", "3"}},
		{"zz", nil},
	} {
		if got := maskCPUs(tc.mask); !slices.Equal(got, tc.want) {
			t.Errorf("maskCPUs(%q) = %v, want %v", tc.mask, got, tc.want)
		}
	}
}
