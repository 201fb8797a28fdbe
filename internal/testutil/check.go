package testutil

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// CheckRequest is what Envoy's ext_authz filter sends for GET / on
// example.com from the client at ip (port 40000).
func CheckRequest(ip string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{
			Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address:       ip,
				PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 40000},
			}},
		}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method:  "GET",
			Path:    "/",
			Host:    "example.com",
			Headers: map[string]string{":method": "GET", ":path": "/", ":authority": "example.com"},
		}},
	}}
}
