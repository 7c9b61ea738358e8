package transport

import (
	"errors"
	"fmt"

	"github.com/quic-go/quic-go"
)

// Sentinel errors. A refused stream surfaces on the opener's Read or Write as
// one of ErrUnauthorized, ErrRevoked, ErrUnknownKind or ErrCertificateRequired
// (wrapped; test with errors.Is).
var (
	// ErrClosed is returned by Dial and Accept once the Endpoint or the
	// StreamLayer has shut down.
	ErrClosed = errors.New("transport closed")
	// ErrUnauthorized means the accepting node's Authorize refused the
	// stream.
	ErrUnauthorized = errors.New("stream refused: not authorized")
	// ErrRevoked means a certificate in the exchange is revoked.
	ErrRevoked = errors.New("certificate revoked")
	// ErrUnknownKind means the accepting node has no handler for the kind.
	ErrUnknownKind = errors.New("stream refused: no handler for this kind")
	// ErrCertificateRequired means a connection without a client
	// certificate opened a stream of a kind not in Config.AnonymousKinds
	// (KindJoin by default).
	ErrCertificateRequired = errors.New("stream refused: a mesh certificate is required for this kind")
	// ErrNotMeshCertificate means a certificate verified against the CA but
	// is not a node certificate (no node name, site or known role).
	ErrNotMeshCertificate = errors.New("not a mesh node certificate")
	// ErrFingerprintMismatch is DialPinned's error when the hub's chain does
	// not carry the pinned CA or its leaf does not verify against it.
	ErrFingerprintMismatch = errors.New("hub certificate does not match the CA fingerprint in the token")
)

// Application error codes on the wire. Stream codes travel in
// RESET_STREAM/STOP_SENDING, connection codes in CONNECTION_CLOSE.
const (
	codeStreamClosed       quic.StreamErrorCode = 0x0 // Close cancelled the read side
	codeStreamUnauthorized quic.StreamErrorCode = 0x101
	codeStreamRevoked      quic.StreamErrorCode = 0x102
	codeStreamUnknownKind  quic.StreamErrorCode = 0x103
	codeStreamCertRequired quic.StreamErrorCode = 0x104
	codeStreamShutdown     quic.StreamErrorCode = 0x105

	codeConnClosed  quic.ApplicationErrorCode = 0x0 // normal close (shutdown, DialPinned done)
	codeConnRevoked quic.ApplicationErrorCode = 0x1 // the peer's certificate was revoked
)

// refusal maps a stream error code sent by the peer to its sentinel, or nil
// when the code is not a refusal.
func refusal(code quic.StreamErrorCode) error {
	switch code {
	case codeStreamUnauthorized:
		return ErrUnauthorized
	case codeStreamRevoked:
		return ErrRevoked
	case codeStreamUnknownKind:
		return ErrUnknownKind
	case codeStreamCertRequired:
		return ErrCertificateRequired
	case codeStreamShutdown:
		return ErrClosed
	}
	return nil
}

// streamErr wraps err with a refusal sentinel when the peer reset the stream
// with one of Outpost's refusal codes, or closed the connection because our
// certificate is revoked. It runs on the error path only.
func (s *Stream) streamErr(err error) error {
	var se *quic.StreamError
	if errors.As(err, &se) && se.Remote {
		if sentinel := refusal(se.ErrorCode); sentinel != nil {
			return fmt.Errorf("%s stream to %s: %w", s.kind, s.conn.RemoteAddr(), sentinel)
		}
	}
	var ae *quic.ApplicationError
	if errors.As(err, &ae) && ae.Remote && ae.ErrorCode == codeConnRevoked {
		return fmt.Errorf("%s stream to %s: connection closed: %w", s.kind, s.conn.RemoteAddr(), ErrRevoked)
	}
	return err
}
