#!/bin/sh
echo "Content-Type: text/plain"
echo
echo "web $(hostname) asked: $(wget -q -O- http://backend/)"
