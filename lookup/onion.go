package lookup

import (
	"crypto/sha3"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/net/idna"
)

// onionV3Len is the length of a v3 onion label: base32 of a 32-byte ed25519
// key, a 2-byte checksum and a version byte (Tor's rend-spec-v3, section 6).
const onionV3Len = 56

// onionV2Len is the length of the retired v2 onion label (16 base32
// characters); Tor dropped v2 services in 0.4.6.
const onionV2Len = 16

var onionEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// ErrNotOnion is returned by CheckOnion for names outside the .onion domain.
var ErrNotOnion = errors.New("not a .onion name")

// IsOnion reports whether name is in the .onion special-use domain
// (RFC 7686), whatever its label looks like. Such names must never reach a
// DNS resolver.
func IsOnion(name string) bool {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	return name == "onion" || strings.HasSuffix(name, ".onion")
}

// LooksOnion reports whether a domain as written is in .onion, whether or
// not it is a valid domain name: in any letter case, with trailing dots,
// in an address literal's brackets, in Unicode that IDNA maps to ASCII
// (full-width letters, the ideographic full stop "。"). Postfix's smtp(8)
// maps such a name the same way before its DNS lookup, so none of them may
// be handed to it.
func LooksOnion(domain string) bool {
	d := strings.TrimPrefix(strings.TrimSuffix(domain, "]"), "[")
	if mapped, _ := idna.Lookup.ToASCII(d); mapped != "" {
		// Mapped even when it is not a valid name (the error).
		d = mapped
	}
	d = strings.TrimRight(strings.ToLower(d), ".")
	return d == "onion" || strings.HasSuffix(d, ".onion")
}

// CheckOnion reports why name is not a dialable v3 onion address, or nil if
// it is one. It accepts an optional trailing dot and any letter case. A
// subdomain of an onion ("mail.<56>.onion") is accepted as Tor accepts it:
// only the label before ".onion" is the address.
func CheckOnion(name string) error {
	n := strings.TrimSuffix(strings.ToLower(name), ".")
	if !strings.HasSuffix(n, ".onion") {
		return ErrNotOnion
	}
	n = strings.TrimSuffix(n, ".onion")
	if i := strings.LastIndexByte(n, '.'); i >= 0 {
		// The subdomain labels mean nothing to Tor, but they are passed
		// on (to Tor, into Postfix's nexthop): host-name characters only.
		for _, label := range strings.Split(n[:i], ".") {
			if !isLDHLabel(label) {
				return fmt.Errorf("onion address has a subdomain label %q that is not a host name label", label)
			}
		}
		n = n[i+1:]
	}
	switch {
	case len(n) == onionV2Len:
		return errors.New("v2 onion address (retired since Tor 0.4.6)")
	case len(n) != onionV3Len:
		return fmt.Errorf("onion address has %d characters, a v3 address has %d", len(n), onionV3Len)
	}
	raw, err := onionEncoding.DecodeString(strings.ToUpper(n))
	if err != nil {
		return errors.New("onion address is not base32")
	}
	// raw = pubkey[32] || checksum[2] || version[1]
	pub, sum, version := raw[:32], raw[32:34], raw[34]
	if version != 3 {
		return fmt.Errorf("onion address has version %d, want 3", version)
	}
	h := sha3.New256()
	h.Write([]byte(".onion checksum"))
	h.Write(pub)
	h.Write([]byte{version})
	want := h.Sum(nil)
	if sum[0] != want[0] || sum[1] != want[1] {
		return errors.New("onion address checksum mismatch (typo?)")
	}
	return nil
}

// isLDHLabel reports whether label (lower case) is a host name label:
// letters, digits and inner hyphens, 1 to 63 of them (RFC 1123 section 2.1).
func isLDHLabel(label string) bool {
	if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
		return false
	}
	for i := 0; i < len(label); i++ {
		c := label[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// OnionFromKey returns the v3 onion name ("<56 characters>.onion") of an
// ed25519 public key. It is the inverse of CheckOnion, used by tests and by
// tools that publish an address.
func OnionFromKey(pub []byte) string {
	h := sha3.New256()
	h.Write([]byte(".onion checksum"))
	h.Write(pub)
	h.Write([]byte{3})
	raw := make([]byte, 0, 35)
	raw = append(raw, pub...)
	raw = append(raw, h.Sum(nil)[:2]...)
	raw = append(raw, 3)
	return strings.ToLower(onionEncoding.EncodeToString(raw)) + ".onion"
}
