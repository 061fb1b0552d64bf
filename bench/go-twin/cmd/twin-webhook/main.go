// twin-webhook: a minimal controller-runtime admission webhook with the same
// validation and defaulting as redis-webhook (api/src/policy.rs,
// api/src/defaults.rs, webhook/src/admission.rs): POST /validate and
// /mutate over TLS 1.2/1.3, plus /healthz, /readyz and /metrics over plain
// HTTP. For benchmarks only.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"

	"redis-operator.bench/go-twin/internal/api"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

const deniedCode = 422

func decode(raw []byte) (map[string]any, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var obj map[string]any
	if err := d.Decode(&obj); err != nil {
		return nil, err
	}
	return obj, nil
}

func objectName(req admission.Request) string {
	if req.Namespace != "" {
		return req.Namespace + "/" + req.Name
	}
	return req.Name
}

func deny(code int32, msg string) admission.Response {
	reason := metav1.StatusReasonBadRequest
	if code == deniedCode {
		reason = metav1.StatusReasonInvalid
	}
	return admission.Response{AdmissionResponse: admissionv1.AdmissionResponse{
		Allowed: false,
		Result:  &metav1.Status{Code: code, Message: msg, Reason: reason},
	}}
}

func isScale(req admission.Request) bool { return req.SubResource == "scale" }

func validate(p api.Policy) admission.HandlerFunc {
	return func(_ context.Context, req admission.Request) admission.Response {
		if req.Operation == admissionv1.Delete || req.Operation == admissionv1.Connect {
			return admission.Allowed("")
		}
		obj, err := decode(req.Object.Raw)
		if err != nil || obj == nil {
			return deny(400, fmt.Sprintf("%s request without an object", req.Operation))
		}
		what, violations := "RedisCluster", []api.Violation(nil)
		if isScale(req) {
			what, violations = "scale of RedisCluster", api.ValidateScale(obj["spec"], p)
		} else {
			violations = api.ValidateSpec(obj["spec"], p)
		}
		if len(violations) == 0 {
			resp := admission.Allowed("")
			if !isScale(req) {
				resp.Warnings = api.Warnings(obj["spec"])
			}
			return resp
		}
		return deny(deniedCode, fmt.Sprintf("%s %s is invalid: %s", what, objectName(req), api.Describe(violations)))
	}
}

func mutate(p api.Policy) admission.HandlerFunc {
	return func(_ context.Context, req admission.Request) admission.Response {
		if req.Operation == admissionv1.Delete || req.Operation == admissionv1.Connect || isScale(req) {
			return admission.Allowed("")
		}
		obj, err := decode(req.Object.Raw)
		if err != nil || obj == nil {
			return admission.Allowed("")
		}
		if v := api.ValidateSpec(obj["spec"], p); len(v) > 0 {
			return deny(deniedCode, fmt.Sprintf("RedisCluster %s is invalid: %s", objectName(req), api.Describe(v)))
		}
		ops := api.DefaultPatch(obj, p)
		if len(ops) == 0 {
			return admission.Allowed("")
		}
		patches := make([]jsonpatch.JsonPatchOperation, len(ops))
		for i, op := range ops {
			patches[i] = jsonpatch.JsonPatchOperation{Operation: op.Op, Path: op.Path, Value: op.Value}
		}
		return admission.Patched("", patches...)
	}
}

func main() {
	certDir := flag.String("cert-dir", "/tls", "directory holding tls.crt and tls.key")
	bind := flag.String("bind", "127.0.0.1:8443", "HTTPS address for /validate and /mutate")
	metricsBind := flag.String("metrics-bind", "127.0.0.1:8080", "plain HTTP address for /healthz, /readyz and /metrics")
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseDevMode(false)))
	log := ctrl.Log.WithName("twin-webhook")

	host, portStr, err := net.SplitHostPort(*bind)
	if err != nil {
		log.Error(err, "parsing --bind")
		os.Exit(2)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		log.Error(err, "parsing --bind")
		os.Exit(2)
	}
	policy := api.DefaultPolicy()
	srv := webhook.NewServer(webhook.Options{
		Host:    host,
		Port:    port,
		CertDir: *certDir,
		TLSOpts: []func(*tls.Config){func(c *tls.Config) {
			c.MinVersion = tls.VersionTLS12
			// HTTP/1.1 only, like redis-webhook.
			c.NextProtos = []string{"http/1.1"}
		}},
	})
	srv.Register("/validate", &admission.Webhook{Handler: validate(policy)})
	srv.Register("/mutate", &admission.Webhook{Handler: mutate(policy)})

	ctx := ctrl.SetupSignalHandler()
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := srv.StartedChecker()(r); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	mux.Handle("/metrics", promhttp.HandlerFor(metrics.Registry, promhttp.HandlerOpts{}))
	ops := &http.Server{Addr: *metricsBind, Handler: mux}
	go func() {
		<-ctx.Done()
		_ = ops.Close()
	}()
	go func() {
		if err := ops.ListenAndServe(); err != nil && err != http.ErrServerClosed {
			log.Error(err, "HTTP server failed")
		}
	}()
	if err := srv.Start(ctx); err != nil {
		log.Error(err, "webhook server failed")
		os.Exit(1)
	}
}
