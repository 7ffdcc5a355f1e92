package timeout

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"testing"
	"time"
)

func TestIs(t *testing.T) {
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	c1.SetReadDeadline(time.Now().Add(-time.Second))
	_, readErr := c1.Read(make([]byte, 1))

	for _, tc := range []struct {
		err  error
		want bool
	}{
		{readErr, true},
		{fmt.Errorf("reading: %w", os.ErrDeadlineExceeded), true},
		{context.DeadlineExceeded, true},
		{fmt.Errorf("asking: %w", context.DeadlineExceeded), true},
		{&net.DNSError{Err: "timed out", IsTimeout: true}, true},
		{context.Canceled, false},
		{&net.DNSError{Err: "no such host", IsNotFound: true}, false},
		{errors.New("timeout"), false},
		{nil, false},
	} {
		if got := Is(tc.err); got != tc.want {
			t.Errorf("Is(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
