package api

import "testing"

func TestParseImage(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want ImageRef
		err  bool
	}{
		{in: "nginx", want: ImageRef{"docker.io", "library/nginx", "latest"}},
		{in: "docker.io/nginx:1.27", want: ImageRef{"docker.io", "library/nginx", "1.27"}},
		{in: "registry.example.com:5000/team/app:v1", want: ImageRef{"registry.example.com:5000", "team/app", "v1"}},
		{in: "ghcr.io/o/r@sha256:" + "a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4", want: ImageRef{"ghcr.io", "o/r", "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"}},
		{in: "https://registry.example.com/app", err: true},
		{in: "Team/App", err: true},
		{in: "", err: true},
	} {
		got, err := ParseImage(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseImage(%q) = %+v, %v; want %+v (error %t)", tc.in, got, err, tc.want, tc.err)
		}
		if err == nil {
			if back, err := ParseImage(got.String()); err != nil || back != got {
				t.Errorf("ParseImage(%q.String()) = %+v, %v", tc.in, back, err)
			}
		}
	}
}

func TestParsePlatform(t *testing.T) {
	t.Parallel()
	if os, arch, v, err := ParsePlatform("linux/arm/v7"); err != nil || os != "linux" || arch != "arm" || v != "v7" {
		t.Fatalf("linux/arm/v7: %s %s %s %v", os, arch, v, err)
	}
	for _, bad := range []string{"arm64", "linux/", "Linux/amd64", "linux/arm/v7/x"} {
		if _, _, _, err := ParsePlatform(bad); err == nil {
			t.Errorf("ParsePlatform(%q) accepted", bad)
		}
	}
}
