// Package oniontest makes onion addresses for tests.
package oniontest

import (
	"crypto/rand"

	"github.com/onionmx/onionmx/lookup"
)

// New returns a valid v3 onion name ("<56 characters>.onion") for a fresh
// random key: an onion no test has used before.
func New() string {
	key := make([]byte, 32)
	rand.Read(key)
	return lookup.OnionFromKey(key)
}
