package token_test

import "encoding/base64"

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// testHMACKey keys authorization codes and refresh tokens in tests.
var testHMACKey = []byte("0123456789abcdef0123456789abcdef")
