#!/bin/sh
# Writes the certificates of the `pipeline-tls` Secret: a private CA (ca.pem, ca.key) and one
# certificate signed by it (tls.crt, tls.key) that the scheduler, the workers and the job client
# all present (mutual TLS: a peer without a certificate from this CA is refused).
#
#   deploy/kubernetes/make-certs.sh [DIR]      (default: deploy/kubernetes/tls)
#
# Dask does not check host names, so one certificate serves every pod. Keep ca.key out of the
# cluster (and out of git: tls/.gitignore).
set -eu

dir="${1:-$(dirname "$0")/tls}"
days="${DAYS:-365}"
mkdir -p "$dir"
umask 077

openssl req -x509 -new -nodes -days "$days" \
    -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -subj "/CN=dask-pipeline CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null

openssl req -new -nodes \
    -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -subj "/CN=dask-pipeline" \
    -keyout "$dir/tls.key" -out "$dir/tls.csr" 2>/dev/null

cat > "$dir/tls.ext" <<EXT
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=DNS:pipeline-scheduler,DNS:pipeline-scheduler.pipeline.svc,DNS:localhost,IP:127.0.0.1
EXT

openssl x509 -req -days "$days" -in "$dir/tls.csr" \
    -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
    -extfile "$dir/tls.ext" -out "$dir/tls.crt" 2>/dev/null

rm -f "$dir/tls.csr" "$dir/tls.ext" "$dir/ca.srl"
chmod 0644 "$dir/ca.pem" "$dir/tls.crt"
echo "wrote $dir/ca.pem $dir/tls.crt $dir/tls.key (and $dir/ca.key: keep it private)"
