// Package atomicfile replaces files so that a crash leaves either the old
// content or the new, never a part: credential files, certificates, keys.
package atomicfile
