# The lab cluster's PKI and kubeconfigs, sourced by lab/components/10-kube.sh.
# shellcheck shell=bash
#
# One lab CA signs every serving and client certificate (P-256 keys: fast to make, accepted by
# etcd, the apiserver and the Python client). Keys are 0600; kubeconfigs embed their
# certificates so a copy works anywhere on this machine.

# ca_create DIR: the lab CA (ca.crt, ca.key) unless it exists.
ca_create() {
  local dir="$1"
  [[ -s "$dir/ca.crt" && -s "$dir/ca.key" ]] && return 0
  mkdir -p "$dir"; chmod 0700 "$dir"
  (umask 077 && openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$dir/ca.key" -out "$dir/ca.crt" -days 3650 -subj "/CN=onprem-lab-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign") \
    >/dev/null 2>&1 || die "kube: openssl could not create the lab CA in $dir"
  chmod 0644 "$dir/ca.crt"
}

# cert_create DIR NAME SUBJECT USAGE [SAN]: NAME.crt/NAME.key signed by the CA in DIR.
# USAGE is serverAuth, clientAuth or both comma-separated; SAN like "IP:127.0.0.1,DNS:localhost".
cert_create() {
  local dir="$1" name="$2" subj="$3" usage="$4" san="${5:-}" ext
  [[ -s "$dir/$name.crt" && -s "$dir/$name.key" ]] && return 0
  ext="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=$usage"
  [[ -n "$san" ]] && ext+=$'\n'"subjectAltName=$san"
  (umask 077 &&
    openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
      -keyout "$dir/$name.key" -out "$dir/$name.csr" -subj "$subj" &&
    openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
      -set_serial "0x$(openssl rand -hex 16)" -days 825 -out "$dir/$name.crt" \
      -extfile <(printf '%s\n' "$ext")) >/dev/null 2>&1 ||
    die "kube: openssl could not create the $name certificate in $dir"
  rm -f "$dir/$name.csr"
  chmod 0644 "$dir/$name.crt"
}

# sa_keypair DIR: the key pair that signs and verifies service account tokens.
sa_keypair() {
  local dir="$1"
  [[ -s "$dir/sa.key" && -s "$dir/sa.pub" ]] && return 0
  (umask 077 && openssl ecparam -name prime256v1 -genkey -noout -out "$dir/sa.key" &&
    openssl ec -in "$dir/sa.key" -pubout -out "$dir/sa.pub") >/dev/null 2>&1 ||
    die "kube: openssl could not create the service account key pair in $dir"
}

# kubeconfig_write FILE SERVER CA CERT KEY USER: a one-context kubeconfig, 0600.
kubeconfig_write() {
  local file="$1" server="$2" ca="$3" cert="$4" key="$5" user="$6"
  (umask 077 && cat >"$file.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: onprem-lab
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 <"$ca")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 <"$cert")
    client-key-data: $(base64 -w0 <"$key")
contexts:
- name: onprem-lab
  context:
    cluster: onprem-lab
    user: $user
current-context: onprem-lab
EOF
  ) && mv "$file.tmp" "$file"
}

# kube_pki DIR SERVER: every certificate and kubeconfig the lab cluster needs.
kube_pki() {
  local dir="$1" server="$2" kc="$1/.."
  ca_create "$dir"
  sa_keypair "$dir"
  cert_create "$dir" etcd "/CN=onprem-lab-etcd" "serverAuth,clientAuth" "IP:127.0.0.1,DNS:localhost"
  cert_create "$dir" apiserver-etcd-client "/CN=kube-apiserver-etcd-client" clientAuth
  cert_create "$dir" apiserver "/CN=kube-apiserver" serverAuth \
    "IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  cert_create "$dir" admin "/O=system:masters/CN=onprem-lab-admin" clientAuth
  cert_create "$dir" controller-manager "/CN=system:kube-controller-manager" clientAuth
  cert_create "$dir" scheduler "/CN=system:kube-scheduler" clientAuth
  # kwok stands in for every node's kubelet at once; the Node authorizer would confine a
  # kubelet identity to one node, so kwok runs as a cluster admin.
  cert_create "$dir" kwok "/O=system:masters/CN=kwok-controller" clientAuth
  local who
  for who in admin controller-manager scheduler kwok; do
    [[ -s "$kc/$who.kubeconfig" ]] ||
      kubeconfig_write "$kc/$who.kubeconfig" "$server" "$dir/ca.crt" "$dir/$who.crt" "$dir/$who.key" "$who"
  done
  cp "$dir/ca.crt" "$kc/ca.crt"
}
