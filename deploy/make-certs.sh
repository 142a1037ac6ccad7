#!/usr/bin/env bash
# Makes a private CA and one certificate per node for [cluster_tls] (mutual TLS between nodes) and for
# [node.tls] / [node.admin_tls] (the client API and admin listeners).
#
#   deploy/make-certs.sh OUT_DIR NAME=HOST[,HOST...] ...
#   deploy/make-certs.sh ./certs n1=10.0.0.11,tollgate-1.internal n2=10.0.0.12 n3=10.0.0.13
#
# Writes OUT_DIR/ca.pem (+ ca.key, keep it offline) and OUT_DIR/NAME.pem + NAME.key per node: EC P-256,
# valid 825 days, subject alternative names = the HOSTs (IP addresses or DNS names: the addresses peers and
# clients dial), usable for both server and client authentication. Keys are 0600. Then, on each node:
#
#   [cluster_tls]
#   ca_file = "/etc/tollgate/ca.pem"
#   cert_file = "/etc/tollgate/n1.pem"
#   key_file = "/etc/tollgate/n1.key"
set -euo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
command -v openssl >/dev/null || { echo "make-certs.sh needs the openssl command (apt-get install openssl)"; exit 1; }
out="$1"; shift
mkdir -p "$out"
umask 077
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
if [ ! -f "$out/ca.pem" ]; then
  openssl req -x509 "${ec[@]}" -keyout "$out/ca.key" -out "$out/ca.pem" -days 3650 \
    -subj "/CN=tollgate-cluster-ca" 2>/dev/null
  echo "made $out/ca.pem (CA key: $out/ca.key — keep it off the nodes)"
fi
for spec in "$@"; do
  name="${spec%%=*}"; hosts="${spec#*=}"
  if [ -z "$name" ] || [ "$name" = "$spec" ] || [ -z "$hosts" ]; then
    echo "bad node spec '$spec': use NAME=HOST[,HOST...]"; exit 2
  fi
  san=""
  IFS=',' read -ra list <<< "$hosts"
  for host in "${list[@]}"; do
    if [[ "$host" =~ ^[0-9.]+$ || "$host" == *:* ]]; then san+="IP:$host,"; else san+="DNS:$host,"; fi
  done
  san="${san%,}"
  printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n' "$san" > "$out/$name.ext"
  openssl req "${ec[@]}" -keyout "$out/$name.key" -out "$out/$name.csr" -subj "/CN=$name" 2>/dev/null
  openssl x509 -req -in "$out/$name.csr" -CA "$out/ca.pem" -CAkey "$out/ca.key" -CAcreateserial \
    -out "$out/$name.pem" -days 825 -extfile "$out/$name.ext" 2>/dev/null
  rm -f "$out/$name.csr" "$out/$name.ext"
  chmod 600 "$out/$name.key"
  echo "made $out/$name.pem for $san"
done
