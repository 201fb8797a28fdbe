package rls_test

import (
	"fmt"

	"github.com/floodgate-rl/floodgate/policy/rls"
)

func ExampleConfig_Match() {
	c, err := rls.Parse("messaging.yaml", []byte(`domain: messaging
descriptors:
  - key: message_type
    value: marketing
    descriptors:
      - key: to_number
        rate_limit:
          unit: day
          requests_per_unit: 5
  - key: to_number
    rate_limit:
      unit: day
      requests_per_unit: 100
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	// One request with two descriptors: each is matched on its own.
	for _, d := range [][]rls.Entry{
		{{Key: "message_type", Value: "marketing"}, {Key: "to_number", Value: "2061111111"}},
		{{Key: "to_number", Value: "2061111111"}},
		{{Key: "message_type", Value: "marketing"}},
	} {
		if l := c.Match("messaging", d); l != nil {
			fmt.Printf("%s: %d a %s, window %s\n", l.Key, l.RequestsPerUnit, l.Unit, l.Unit.Window())
		} else {
			fmt.Println("no rule: OK, not counted")
		}
	}
	// Output:
	// messaging.message_type_marketing.to_number: 5 a day, window 24h0m0s
	// messaging.to_number: 100 a day, window 24h0m0s
	// no rule: OK, not counted
}

func ExampleErrors() {
	_, err := rls.Parse("edge.yaml", []byte(`domain: edge
descriptors:
  - key: remote_address
    ratelimit: {unit: second, requests_per_unit: 10}
  - key: path
    rate_limit: {unit: week, requests_per_unit: 100}
`))
	fmt.Println(err)
	// Output:
	// edge.yaml:4: descriptors[0]: unknown field "ratelimit" (want key, value, rate_limit, descriptors, shadow_mode, detailed_metric, value_to_metric, share_threshold)
	// edge.yaml:6: descriptors[1].rate_limit.unit: rate limit unit 'week': floodgate's windows are at most a day (want second, minute, hour or day)
}
