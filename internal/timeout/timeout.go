// Package timeout says whether an error is a timeout, the one way every
// package asks.
package timeout

import "errors"

// Is reports whether err, or an error it wraps, says it is a timeout: a
// net.Error or an os deadline whose time ran out, and
// context.DeadlineExceeded.
func Is(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}
