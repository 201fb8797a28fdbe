package rls_test

import (
	"testing"

	"github.com/floodgate-rl/floodgate/policy/rls"
)

func TestLoadExample1(t *testing.T) {
	c, err := rls.Load("testdata/example1.yaml")
	if err != nil {
		t.Fatal(err)
	}
	l := c.Match("mongo_cps", []rls.Entry{{"database", "users"}})
	if l == nil || l.RequestsPerUnit != 500 || l.Unit != rls.UnitSecond || l.Key != "mongo_cps.database_users" {
		t.Fatalf("got %+v", l)
	}
}
