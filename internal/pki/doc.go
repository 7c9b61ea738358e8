// Package pki creates and loads the certificate authorities Outpost runs on
// and issues certificates from them: ECDSA P-256 keys, PEM files with mode
// 0600 for keys, written atomically.
package pki
