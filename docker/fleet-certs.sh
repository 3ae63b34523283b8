#!/usr/bin/env bash
# Makes what docker/compose.fleet.yml needs for etcd with mutual TLS and
# authentication, in docker/secrets/etcd/ (kept out of git):
#
#   ca.pem, ca-key.pem            a CA for this fleet only (ca-key.pem never enters a container)
#   etcd-N.pem, etcd-N-key.pem    member N's certificate for clients and peers (DNS etcd-N)
#   bluegreen.pem, -key.pem       the replicas' client certificate (CN bluegreen)
#   root.pem, root-key.pem        the client certificate fleet-auth.sh uses to enable auth
#   bluegreen_password            the etcd password of user "bluegreen"
#   root_password                 the etcd password of user "root"
#
# Usage: docker/fleet-certs.sh [DAYS]   (default 825; run again to renew: the
# CA is kept if it exists, so members and replicas keep trusting each other)
# Needs openssl. Files the bluegreen image (uid 65532) reads get group 65532
# and mode 0640; the members' keys stay 0600 (etcd runs as root in its image).
set -euo pipefail
days="${1:-825}"
dir="$(cd "$(dirname "$0")" && pwd)/secrets/etcd"
mkdir -p "$dir"
cd "$dir"
umask 077

if [ ! -f ca.pem ]; then
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/CN=bluegreen fleet etcd CA" -keyout ca-key.pem -out ca.pem 2>/dev/null
fi

# issue NAME SUBJECT_ALT_NAMES
issue() {
  local name="$1" san="$2"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/CN=$name" -keyout "$name-key.pem" -out "$name.csr" 2>/dev/null
  printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n%s' \
    "${san:+subjectAltName=$san}" >"$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
    -days "$days" -extfile "$name.ext" -out "$name.pem" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
}

for n in 1 2 3; do issue "etcd-$n" "DNS:etcd-$n,DNS:localhost,IP:127.0.0.1"; done
issue bluegreen ""
issue root ""
for u in bluegreen root; do
  [ -s "${u}_password" ] || head -c 24 /dev/urandom | base64 | tr -d '/+=\n' >"${u}_password"
done

chmod 0644 ca.pem etcd-*.pem bluegreen.pem root.pem
chmod 0600 ca-key.pem etcd-*-key.pem root-key.pem root_password
# Read by the bluegreen replicas (uid 65532).
chgrp 65532 bluegreen-key.pem bluegreen_password 2>/dev/null || chmod 0644 bluegreen-key.pem bluegreen_password
chmod 0640 bluegreen-key.pem bluegreen_password 2>/dev/null || true
echo "fleet certificates in $dir (valid $days days):"
openssl x509 -in bluegreen.pem -noout -subject -enddate
