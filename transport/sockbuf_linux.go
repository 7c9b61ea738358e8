//go:build linux

package transport

import (
	"net"

	"golang.org/x/sys/unix"
)

// setBuffers raises SO_RCVBUF and SO_SNDBUF to size, trying the *FORCE
// options when the plain ones are capped, and returns the sizes in effect.
// Linux reports twice the requested size (it counts bookkeeping), so the
// sizes returned are halved to compare with what was asked.
func setBuffers(conn *net.UDPConn, size int) (rcv, snd int, err error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return 0, 0, err
	}
	var serr error
	cerr := raw.Control(func(fd uintptr) {
		rcv, serr = setOne(int(fd), unix.SO_RCVBUF, unix.SO_RCVBUFFORCE, size)
		if serr != nil {
			return
		}
		snd, serr = setOne(int(fd), unix.SO_SNDBUF, unix.SO_SNDBUFFORCE, size)
	})
	if cerr != nil {
		return 0, 0, cerr
	}
	return rcv, snd, serr
}

func setOne(fd, opt, force, size int) (int, error) {
	if got, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, opt); err == nil && got/2 >= size {
		return got / 2, nil
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt, size) // capped silently by the sysctl
	if got, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, opt); err == nil && got/2 >= size {
		return got / 2, nil
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, force, size) // EPERM without CAP_NET_ADMIN
	got, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, opt)
	return got / 2, err
}
