package problem_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/switchboard-go/switchboard/internal/problem"
)

func ExampleWrite() {
	rec := httptest.NewRecorder()
	d := problem.New(http.StatusNotFound, "no job 42")
	d.Extensions = map[string]any{"job": "42"}
	problem.Write(rec, d)

	fmt.Println(rec.Code, rec.Header().Get("Content-Type"))
	fmt.Print(rec.Body.String())
	// Output:
	// 404 application/problem+json
	// {"title":"Not Found","status":404,"detail":"no job 42","job":"42"}
}

func ExampleRead() {
	rec := httptest.NewRecorder()
	problem.Write(rec, problem.New(http.StatusServiceUnavailable, "draining"))

	if d, ok := problem.Read(rec.Result()); ok {
		fmt.Println(d.Status, d.Title+":", d.Detail)
	}
	// Output: 503 Service Unavailable: draining
}
