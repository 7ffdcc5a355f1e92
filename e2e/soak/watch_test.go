package main

import "testing"

// A command name may hold spaces and parentheses: fields count from the
// last ')'.
func TestStatField(t *testing.T) {
	stat := []byte("4242 (a) b (c)) S 17 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 200 18446744073709551615\n")
	for n, want := range map[int]string{3: "S", 4: "17", 22: "98765", 25: "18446744073709551615", 26: "", 2: ""} {
		if got := statField(stat, n); got != want {
			t.Errorf("statField(field %d) = %q, want %q", n, got, want)
		}
	}
	if got := statField([]byte("no parenthesis 1 2 3"), 4); got != "" {
		t.Errorf("statField without a command name = %q, want \"\"", got)
	}
}
