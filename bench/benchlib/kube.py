"""A minimal Kubernetes REST client over the standard library.

Reads the harness's kubeconfig (file paths for the CA, client cert and key),
keeps one keep-alive HTTPS connection per thread, and only ever dials the
loopback apiserver named in that kubeconfig.
"""

import http.client
import ipaddress
import json
import re
import ssl
import threading
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

META_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"


class ApiError(Exception):
    def __init__(self, status, method, path, body):
        super().__init__(f"{method} {path}: HTTP {status}: {body[:300]}")
        self.status = status


def _field(text, key):
    m = re.search(rf"^\s*{re.escape(key)}:\s*(\S+)\s*$", text, re.M)
    if not m:
        raise ValueError(f"kubeconfig has no {key}")
    return m.group(1)


class Kube:
    def __init__(self, kubeconfig):
        text = open(kubeconfig).read()
        url = urllib.parse.urlparse(_field(text, "server"))
        host = url.hostname or ""
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"refusing a non-loopback apiserver: {host}")
        self.host, self.port = host, url.port or 443
        ctx = ssl.create_default_context(cafile=_field(text, "certificate-authority"))
        ctx.load_cert_chain(_field(text, "client-certificate"), _field(text, "client-key"))
        self.ctx = ctx
        self.local = threading.local()

    def _conn(self):
        c = getattr(self.local, "conn", None)
        if c is None:
            c = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=60)
            self.local.conn = c
        return c

    def request(self, method, path, body=None, content_type="application/json",
                accept="application/json", ok=(200, 201, 202)):
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        headers = {"Accept": accept}
        if data is not None:
            headers["Content-Type"] = content_type
        for attempt in range(2):
            conn = self._conn()
            try:
                conn.request(method, path, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
                break
            except (http.client.HTTPException, OSError):
                conn.close()
                self.local.conn = None
                if attempt == 1:
                    raise
        if resp.status not in ok:
            raise ApiError(resp.status, method, path, raw.decode(errors="replace"))
        return json.loads(raw) if raw else None

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def list_meta(self, path, selector=None):
        """Names/labels/annotations of a collection, served from the watch cache."""
        q = {"resourceVersion": "0"}
        if selector:
            q["labelSelector"] = selector
        return self.get(f"{path}?{urllib.parse.urlencode(q)}", accept=META_LIST).get("items") or []

    def list(self, path, selector=None):
        q = {"resourceVersion": "0"}
        if selector:
            q["labelSelector"] = selector
        return self.get(f"{path}?{urllib.parse.urlencode(q)}").get("items") or []

    def create(self, path, obj):
        return self.request("POST", path, obj)

    def merge_patch(self, path, patch):
        return self.request("PATCH", path, patch, content_type="application/merge-patch+json")

    def delete(self, path, ok=(200, 202, 404)):
        return self.request("DELETE", path, ok=ok)

    def ensure_namespace(self, name):
        try:
            self.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                               "metadata": {"name": name}})
        except ApiError as e:
            if e.status != 409:
                raise

    def parallel(self, fn, items, workers=8):
        """Runs fn(item) over items on `workers` threads (one connection each)."""
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(fn, items))
