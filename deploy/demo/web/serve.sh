echo "web $(hostname): $(cat /run/secrets/greeting 2>/dev/null)" > /www/index.html
exec httpd -f -p 80 -h /www
