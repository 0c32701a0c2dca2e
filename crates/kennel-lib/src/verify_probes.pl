# kennel verify's probes, run inside a sandbox by perl (perl-base is in
# every Debian image). Each probe tries to break one promise and prints
#   KENNEL-PROBE|class|probe|held|escaped|skipped|detail
# The host passes what to try as key=value arguments; nothing here is
# trusted by the host beyond these lines, which it parses and escapes.
use strict;
use warnings;
use Socket qw(:DEFAULT inet_pton pack_sockaddr_in6 AF_INET6 pack_sockaddr_un);
use POSIX ();
use IO::Select;
$| = 1;

my (%cfg, @markers, @sockets, @syscalls);
for my $arg (@ARGV) {
    my ($key, $value) = split /=/, $arg, 2;
    next unless defined $value;
    if    ($key eq 'marker')  { push @markers,  [ split /\t/, $value, 2 ] }
    elsif ($key eq 'socket')  { push @sockets,  [ split /\t/, $value, 2 ] }
    elsif ($key eq 'syscall') { push @syscalls, [ split /\t/, $value ] }
    else                      { $cfg{$key} = $value }
}
my %want  = map { $_ => 1 } split /,/, ($cfg{classes} // '');
my $token = $cfg{token} // 'no-token';

sub r {
    my ($class, $name, $outcome, $detail) = @_;
    $detail = '' unless defined $detail;
    $detail =~ s/[|\r\n]/ /g;
    print "KENNEL-PROBE|$class|$name|$outcome|$detail\n";
}

sub slurp {
    my ($path, $limit) = @_;
    open my $f, '<', $path or return undef;
    binmode $f;
    my $content = '';
    read $f, $content, $limit // 1 << 20;
    return $content;
}

sub status_field {
    my ($field) = @_;
    my $status = slurp('/proc/self/status') // '';
    return $status =~ /^\Q$field\E:\s*(\S+)/m ? $1 : '?';
}

# Runs a block with a deadline (seconds); false when it ran out.
sub within {
    my ($seconds, $code) = @_;
    my $ok = eval {
        local $SIG{ALRM} = sub { die "timeout\n" };
        alarm $seconds;
        $code->();
        alarm 0;
        1;
    };
    alarm 0;
    return $ok;
}

# Files under the given roots (not following links, bounded).
sub walk {
    my ($roots, $max, $each) = @_;
    my @queue = @$roots;
    my $seen  = 0;
    while (defined(my $path = shift @queue)) {
        last if ++$seen > $max;
        my @st = lstat $path or next;
        if (-d _) {
            next if $path =~ m{^/(proc|sys|dev)(/|$)};
            opendir my $dir, $path or next;
            push @queue, map { $path eq '/' ? "/$_" : "$path/$_" }
              grep { $_ ne '.' && $_ ne '..' } readdir $dir;
        } else {
            $each->($path, \@st);
        }
    }
}

sub tcp_reaches {
    my ($ip, $port, $family) = @_;
    my $got = '';
    within(4, sub {
        my $domain = $family == 6 ? AF_INET6 : AF_INET;
        socket(my $s, $domain, SOCK_STREAM, 0) or return;
        my $addr = $family == 6
          ? pack_sockaddr_in6($port, inet_pton(AF_INET6, $ip))
          : pack_sockaddr_in($port, inet_aton($ip));
        connect($s, $addr) or return;
        sysread $s, $got, 4096;
    });
    return index($got, $token) >= 0;
}

# The sandbox's default gateway (IPv4), if it has a route out.
sub gateway {
    my $route = slurp('/proc/net/route') // '';
    for my $line (split /\n/, $route) {
        my @f = split /\s+/, $line;
        next unless @f > 2 && $f[1] eq '00000000' && $f[2] =~ /^[0-9A-Fa-f]{8}$/;
        return join '.', reverse map { hex } unpack '(A2)4', $f[2];
    }
    return undef;
}

# --- files -----------------------------------------------------------------
if ($want{files}) {
    for my $m (@markers) {
        my ($path, $what) = @$m;
        my $content = slurp($path);
        if (defined $content && index($content, $token) >= 0) {
            r('files', 'marker', 'escaped', "read a marker in $what");
        } else {
            r('files', 'marker', 'held', "no marker in $what");
        }
    }
    my $found;
    for my $environ (glob '/proc/[0-9]*/environ') {
        my $content = slurp($environ) // next;
        $found = $environ if index($content, "KENNEL_VERIFY_WITNESS=$token") >= 0;
    }
    $found
      ? r('files', 'host-processes', 'escaped', "read a host process's environment in $found")
      : r('files', 'host-processes', 'held', 'no host process visible in /proc');
    # Another process's root: a way around a mount namespace if one is shared.
    my $through;
    for my $root (glob '/proc/[0-9]*/root') {
        for my $m (@markers) {
            my $content = slurp("$root$m->[0]");
            $through = "$root$m->[0]" if defined $content && index($content, $token) >= 0;
        }
    }
    $through
      ? r('files', 'proc-root', 'escaped', "read a marker through $through")
      : r('files', 'proc-root', 'held', 'no marker through /proc/*/root');
    # A link planted in the workspace, followed inside the sandbox.
    my ($linked, $made) = (undef, 0);
    for my $i (0 .. $#markers) {
        my $link = ".kennel-verify-link-$i";
        symlink $markers[$i][0], $link or next;
        $made++;
        my $content = slurp($link);
        $linked = $markers[$i][1] if defined $content && index($content, $token) >= 0;
        unlink $link;
    }
    if ($linked) { r('files', 'workspace-symlink', 'escaped', "read the marker in $linked through a link in the workspace") }
    elsif ($made) { r('files', 'workspace-symlink', 'held', "$made links to the markers lead nowhere") }
    else { r('files', 'workspace-symlink', 'skipped', 'could not make a link in the workspace') }
}

# --- privilege -------------------------------------------------------------
if ($want{privilege}) {
    for my $field (qw(CapEff CapPrm CapAmb)) {
        my $caps = status_field($field);
        $caps =~ /^0+$/
          ? r('privilege', "capabilities-" . lc(substr $field, 3), 'held', "$field 0")
          : r('privilege', "capabilities-" . lc(substr $field, 3), 'escaped', "$field $caps");
    }
    my $nnp = status_field('NoNewPrivs');
    $nnp eq '1'
      ? r('privilege', 'no-new-privileges', 'held', 'set')
      : r('privilege', 'no-new-privileges', 'escaped', "NoNewPrivs $nnp");
    my $seccomp = status_field('Seccomp');
    $seccomp eq '2'
      ? r('privilege', 'seccomp', 'held', 'a filter is on')
      : r('privilege', 'seccomp', 'escaped', "Seccomp $seccomp");
    my $uid = $<;
    $uid == ($cfg{uid} // -1)
      ? r('privilege', 'uid', 'held', "uid $uid, yours")
      : r('privilege', 'uid', 'escaped', "runs as uid $uid, you are $cfg{uid}");
    my ($gid) = split / /, $(;
    $gid == ($cfg{gid} // -1)
      ? r('privilege', 'gid', 'held', "gid $gid, yours")
      : r('privilege', 'gid', 'escaped', "runs as gid $gid, yours is $cfg{gid}");
    # RLIMIT_CORE through prlimit64 (no module needed).
    my $limits = "\0" x 16;
    if (defined $cfg{sys_prlimit64} && syscall($cfg{sys_prlimit64}, 0, 4, 0, $limits) == 0) {
        my ($soft, $hard) = unpack 'QQ', $limits;
        $soft == 0
          ? r('privilege', 'core-dumps', 'held', 'RLIMIT_CORE 0')
          : r('privilege', 'core-dumps', 'escaped', "RLIMIT_CORE $soft");
    } else {
        r('privilege', 'core-dumps', 'skipped', "cannot read RLIMIT_CORE: $!");
    }
    my @setuid;
    walk([qw(/usr /bin /sbin /lib /opt)], 100000, sub {
        my ($path, $st) = @_;
        push @setuid, $path if ($st->[2] & 06000) && ($st->[2] & 0111) && -f _;
    });
    if (!@setuid) { r('privilege', 'setuid', 'held', 'no setuid or setgid programs') }
    elsif ($nnp eq '1') { r('privilege', 'setuid', 'held', scalar(@setuid) . " setuid/setgid programs (e.g. $setuid[0]), inert under no-new-privileges") }
    else { r('privilege', 'setuid', 'escaped', "setuid programs run with their owner's rights: $setuid[0]") }
    # System calls the sandbox must refuse, each in a child of its own.
    for my $call (@syscalls) {
        my ($name, $number, @args) = @$call;
        my $pid = fork;
        if (!defined $pid) { r('privilege', "syscall-$name", 'skipped', "cannot fork: $!"); next }
        if ($pid == 0) {
            my @real = map { $_ eq 'BUF' ? ("\0" x 256) : $_ eq 'STR' ? "none" : $_ } @args;
            my $result = syscall($number, @real);
            POSIX::_exit($result >= 0 ? 0 : 10 + ($! + 0 > 200 ? 200 : $! + 0));
        }
        waitpid $pid, 0;
        my $code = $? >> 8;
        if ($? & 127) { r('privilege', "syscall-$name", 'held', 'killed by the filter') }
        elsif ($code == 0) { r('privilege', "syscall-$name", 'escaped', "$name is allowed") }
        else { local $! = $code - 10; r('privilege', "syscall-$name", 'held', "refused: $!") }
    }
    # TIOCSTI: push input into a terminal that is our own controlling one.
    my $pid = fork;
    if (defined $pid && $pid == 0) {
        POSIX::setsid();
        my $code = 3;
        if (open my $master, '+<', '/dev/ptmx') {
            my $unlock = pack 'i', 0;
            my $number = pack 'i', 0;
            if (ioctl($master, 0x40045431, $unlock) && ioctl($master, 0x80045430, $number)) {
                my $n = unpack 'i', $number;
                if (open my $slave, '+<', "/dev/pts/$n") {
                    my $char = 'x';
                    $code = ioctl($slave, 0x5412, $char) ? 0 : 2;
                }
            }
        }
        POSIX::_exit($code);
    }
    if (defined $pid) {
        waitpid $pid, 0;
        my $code = $? >> 8;
        $code == 0 ? r('privilege', 'tiocsti', 'escaped', 'TIOCSTI pushed input into a terminal')
          : $code == 2 ? r('privilege', 'tiocsti', 'held', 'TIOCSTI refused')
          : r('privilege', 'tiocsti', 'skipped', 'no pseudo-terminal to try it on');
    }
    # The pids limit: fork until refused (verify runs with a small limit).
    my $limit = $cfg{pids} // 0;
    if ($limit > 0) {
        my @children;
        my $refused = 0;
        for (1 .. $limit + 20) {
            my $child = fork;
            if (!defined $child) { $refused = 1; last }
            if ($child == 0) { sleep 30; POSIX::_exit(0) }
            push @children, $child;
        }
        kill 'KILL', @children;
        waitpid $_, 0 for @children;
        $refused
          ? r('privilege', 'pids-limit', 'held', scalar(@children) . " processes, then fork refused (limit $limit)")
          : r('privilege', 'pids-limit', 'escaped', scalar(@children) . " processes started, over the limit of $limit");
    }
}

# --- host interfaces -------------------------------------------------------
if ($want{host}) {
    for my $s (@sockets) {
        my ($path, $what) = @$s;
        my $reached = 0;
        within(3, sub {
            socket(my $sock, AF_UNIX, SOCK_STREAM, 0) or return;
            my $address = $path =~ /^@/ ? "\0" . substr($path, 1) : $path;
            $reached = connect($sock, pack_sockaddr_un($address)) ? 1 : 0;
        });
        my $name = $path =~ /^@/ ? 'abstract-socket' : 'socket';
        $reached
          ? r('host', $name, 'escaped', "connected to $what ($path)")
          : r('host', $name, 'held', "$what unreachable");
    }
    my @vars = grep { defined $ENV{$_} && $ENV{$_} ne '' }
      qw(SSH_AUTH_SOCK GPG_AGENT_INFO DBUS_SESSION_BUS_ADDRESS DOCKER_HOST CONTAINER_HOST TMUX DISPLAY WAYLAND_DISPLAY XDG_RUNTIME_DIR);
    @vars
      ? r('host', 'interface-variables', 'escaped', 'set inside: ' . join(' ', @vars))
      : r('host', 'interface-variables', 'held', 'no agent, bus, engine or display variable inside');
}

# --- network ---------------------------------------------------------------
sub proxy_ask {
    my ($request) = @_;
    my ($host, $port) = ($ENV{HTTP_PROXY} // '') =~ m{^http://([^/:]+):(\d+)};
    return ('', '') unless $host;
    my $answer = '';
    within(20, sub {
        socket(my $s, AF_INET, SOCK_STREAM, 0) or return;
        connect($s, pack_sockaddr_in($port, inet_aton($host))) or return;
        syswrite $s, $request;
        # Until the answer is whole (its headers and Content-Length bytes
        # of body): the proxy may keep the connection open.
        while (sysread $s, my $chunk, 8192) {
            $answer .= $chunk;
            last if length $answer > 65536;
            my $end = index $answer, "\r\n\r\n";
            next if $end < 0;
            my ($length) = substr($answer, 0, $end) =~ /^content-length:\s*(\d+)/mi;
            last if length($answer) >= $end + 4 + ($length // 0);
        }
    });
    my ($status) = $answer =~ m{^HTTP/1\.\d (\d{3})};
    my ($reason) = $answer =~ m{^x-kennel-reason:\s*(\S+)}mi;
    return ($status // 'no answer', $reason // '', $answer);
}

# A proxy request's outcome: held when the proxy refused it by policy.
sub proxy_probe {
    my ($name, $what, $request) = @_;
    if (!$ENV{HTTP_PROXY}) { r('network', $name, 'skipped', 'no proxy in this session (network mode none or open)'); return }
    my ($status, $reason, $answer) = proxy_ask($request);
    if (index($answer // '', $token) >= 0) { r('network', $name, 'escaped', "$what reached this machine's listener") }
    elsif ($reason ne '' && $reason ne 'connect-failed' && $reason ne 'resolve-failed') { r('network', $name, 'held', "$what: refused ($reason)") }
    elsif ($status eq 'no answer') { r('network', $name, 'skipped', "$what: the proxy did not answer within 20 s") }
    else { r('network', $name, 'escaped', "$what: the proxy let it through ($status" . ($reason ? " $reason" : '') . ')') }
}

if ($want{network}) {
    my $port = $cfg{tcp_port};
    my $gw = gateway();
    my @targets = grep { defined && $_ ne '' } ($gw, $cfg{own4});
    if (!$port) { r('network', 'direct-tcp', 'skipped', 'no listener on this machine') }
    else {
        my @reached = grep { tcp_reaches($_, $port, 4) } @targets;
        @reached
          ? r('network', 'direct-tcp', 'escaped', "reached this machine at $reached[0]:$port without the proxy")
          : r('network', 'direct-tcp', 'held', (@targets ? join(' ', @targets) : 'no address') . " port $port not reached");
    }
    if (!$port || !$cfg{own6}) { r('network', 'direct-tcp6', 'skipped', 'this machine has no IPv6 address to try') }
    else {
        tcp_reaches($cfg{own6}, $port, 6)
          ? r('network', 'direct-tcp6', 'escaped', "reached this machine at [$cfg{own6}]:$port")
          : r('network', 'direct-tcp6', 'held', "[$cfg{own6}]:$port not reached");
    }
    # UDP: datagrams to the host's listener (the host reports what arrived).
    if ($cfg{udp_port}) {
        for my $ip (@targets) {
            socket(my $s, AF_INET, SOCK_DGRAM, 0) or last;
            send($s, "$token udp", 0, pack_sockaddr_in($cfg{udp_port}, inet_aton($ip)));
        }
        if ($cfg{own6} && socket(my $s6, AF_INET6, SOCK_DGRAM, 0)) {
            send($s6, "$token udp", 0, pack_sockaddr_in6($cfg{udp_port}, inet_pton(AF_INET6, $cfg{own6})));
        }
    }
    # DNS: a query to each resolver the sandbox knows; any answer is a way out.
    my @resolvers = (slurp('/etc/resolv.conf') // '') =~ /^\s*nameserver\s+(\S+)/mg;
    my $query = pack('n n n n n n', 0x4b56, 0x0100, 1, 0, 0, 0)
      . join('', map { chr(length) . $_ } ($token, 'invalid')) . "\0" . pack('n n', 1, 1);
    my @answered;
    for my $resolver (@resolvers) {
        my $v6 = $resolver =~ /:/;
        socket(my $s, $v6 ? AF_INET6 : AF_INET, SOCK_DGRAM, 0) or next;
        my $to = $v6 ? pack_sockaddr_in6(53, inet_pton(AF_INET6, $resolver) // next) : pack_sockaddr_in(53, inet_aton($resolver) // next);
        send($s, $query, 0, $to) or next;
        my $reply = '';
        push @answered, $resolver if IO::Select->new($s)->can_read(2) && defined recv($s, $reply, 512, 0) && length $reply;
    }
    if (!@resolvers) { r('network', 'dns', 'held', 'no resolver configured') }
    elsif (@answered) { r('network', 'dns', 'escaped', "the resolver @answered answered a query from inside: names carry data out") }
    else { r('network', 'dns', 'held', "resolvers @resolvers did not answer") }
    # ICMP echo (unprivileged datagram sockets) and raw sockets.
    my $echoed;
    for my $ip (@targets) {
        socket(my $s, AF_INET, SOCK_DGRAM, 1) or last;
        my $packet = pack('C C n n n', 8, 0, 0, 0x4b56, 1) . $token;
        send($s, $packet, 0, pack_sockaddr_in(0, inet_aton($ip))) or next;
        my $reply = '';
        $echoed = $ip if IO::Select->new($s)->can_read(2) && defined recv($s, $reply, 1500, 0) && length $reply;
    }
    if ($echoed) { r('network', 'icmp', 'escaped', "$echoed answered an ICMP echo") }
    else { r('network', 'icmp', 'held', @targets ? 'no ICMP echo answered' : 'no route for ICMP') }
    for my $raw (['raw-socket', AF_INET, SOCK_RAW, 255], ['packet-socket', 17, SOCK_RAW, 0x0300]) {
        my ($name, @args) = @$raw;
        socket(my $s, $args[0], $args[1], $args[2])
          ? r('network', $name, 'escaped', 'a raw socket was opened')
          : r('network', $name, 'held', "refused: $!");
    }
    # Through the proxy: loopback, private, link-local and metadata addresses
    # in many spellings; each must be refused by policy.
    my $p = $port // 9;
    my @addresses = (
        ['metadata', '169.254.169.254'], ['metadata-decimal', '2852039166'],
        ['metadata-hex', '0xa9fea9fe'], ['metadata-octal', '0251.0376.0251.0376'],
        ['metadata-short', '169.254.43518'], ['metadata-trailing-dot', '169.254.169.254.'],
        ['metadata-ipv4-mapped', '[::ffff:169.254.169.254]'], ['metadata-ipv4-mapped-hex', '[::ffff:a9fe:a9fe]'],
        ['metadata-ipv6', '[fd00:ec2::254]'], ['metadata-name', 'metadata.google.internal'],
        ['loopback', "127.0.0.1:$p"], ['loopback-short', "127.1:$p"], ['loopback-decimal', "2130706433:$p"],
        ['loopback-ipv6', "[::1]:$p"], ['loopback-mapped', "[::ffff:127.0.0.1]:$p"],
        ['localhost', "localhost:$p"], ['localhost-trailing-dot', "localhost.:$p"],
        ['unspecified', "0.0.0.0:$p"], ['private-10', '10.0.0.1'], ['private-192', '192.168.0.1'],
        ['private-172', '172.16.0.1'], ['shared-100', '100.64.0.1'], ['link-local', '169.254.1.1'],
        ['ula-ipv6', '[fc00::1]'], ['link-local-ipv6', '[fe80::1]'],
    );
    for my $a (@addresses) {
        my ($name, $hostport) = @$a;
        proxy_probe("via-proxy-$name", $hostport, "GET http://$hostport/ HTTP/1.1\r\nHost: $hostport\r\nConnection: close\r\n\r\n");
    }
    proxy_probe('connect-loopback', "CONNECT 127.0.0.1:$p", "CONNECT 127.0.0.1:$p HTTP/1.1\r\nHost: 127.0.0.1:$p\r\n\r\n");
    proxy_probe('connect-metadata', 'CONNECT 169.254.169.254:443', "CONNECT 169.254.169.254:443 HTTP/1.1\r\nHost: 169.254.169.254:443\r\n\r\n");
    # A name the session allows that resolves to loopback (rebinding's
    # effect): the address decides, not the name.
    proxy_probe('rebinding-localhost', "an allowed name resolving to 127.0.0.1", "CONNECT localhost:$p HTTP/1.1\r\nHost: localhost:$p\r\n\r\n");
    if (($cfg{mode} // '') eq 'allowlist') {
        my ($allowed, $denied) = ($cfg{allowed}, $cfg{denied});
        my @tricks = (
            ['denied-name', "CONNECT $denied", "CONNECT $denied:443 HTTP/1.1\r\nHost: $denied:443\r\n\r\n"],
            ['denied-absolute-uri', "GET http://$denied/", "GET http://$denied/ HTTP/1.1\r\nHost: $denied\r\n\r\n"],
            ['denied-host-header', "GET http://$denied/ with Host: $allowed", "GET http://$denied/ HTTP/1.1\r\nHost: $allowed\r\n\r\n"],
            ['denied-userinfo', "http://$allowed\@$denied/", "GET http://$allowed\@$denied/ HTTP/1.1\r\nHost: $denied\r\n\r\n"],
            ['denied-suffix', "$allowed.$denied", "CONNECT $allowed.$denied:443 HTTP/1.1\r\nHost: $allowed.$denied:443\r\n\r\n"],
            ['denied-lookalike', "evil$allowed", "CONNECT evil$allowed:443 HTTP/1.1\r\nHost: evil$allowed:443\r\n\r\n"],
            ['denied-origin-form', "GET / with Host: $denied", "GET / HTTP/1.1\r\nHost: $denied\r\n\r\n"],
        );
        proxy_probe(@$_) for @tricks;
    } else {
        r('network', 'allowlist', 'skipped', "network mode $cfg{mode}: no allowlist to get around");
    }
}

# --- planted for later: written here, triggered by the host afterwards -----
if ($want{planted}) {
    my $dir = $cfg{planted} // '';
    my $payload = sub { "touch $dir/$_[0]" };
    my @written;
    my $write = sub {
        my ($path, $content, $mode) = @_;
        my ($parent) = $path =~ m{^(.*)/[^/]+$};
        system('mkdir', '-p', $parent) if defined $parent;
        open my $f, '>>', $path or return;
        print $f $content;
        close $f or return;
        chmod $mode, $path if $mode;
        push @written, $path;
    };
    for my $hook (qw(pre-commit commit-msg post-commit post-checkout post-merge pre-push reference-transaction fsmonitor-watchman post-index-change pre-auto-gc)) {
        $write->(".git/hooks/$hook", "#!/bin/sh\n" . $payload->("hook-$hook") . "\n", 0755);
        $write->(".kennel-verify-hooks/$hook", "#!/bin/sh\n" . $payload->("hookspath-$hook") . "\n", 0755);
    }
    my $programs = join '', map { "\t$_->[0] = " . $payload->($_->[1]) . "; false\n" } (
        ['fsmonitor', 'config-fsmonitor'], ['pager', 'config-pager'], ['editor', 'config-editor'],
        ['sshCommand', 'config-sshcommand'], ['askPass', 'config-askpass'],
    );
    my $config = "[core]\n$programs\thooksPath = .kennel-verify-hooks\n"
      . "[diff]\n\texternal = " . $payload->('config-diff-external') . "\n"
      . "[filter \"kv\"]\n\tclean = " . $payload->('config-filter-clean') . "; cat\n\tsmudge = " . $payload->('config-filter-smudge') . "; cat\n"
      . "[diff \"kv\"]\n\ttextconv = " . $payload->('config-textconv') . "; cat\n"
      . "[alias]\n\tstatus = !" . $payload->('config-alias') . "\n"
      . "[include]\n\tpath = ../.kennel-verify-included\n";
    $write->('.git/config', $config);
    $write->('.kennel-verify-included', $config);
    $write->('.git/config.worktree', $config);
    $write->('.git/info/attributes', "* filter=kv diff=kv\n");
    $write->('.gitattributes', "* filter=kv diff=kv\n");
    $write->('.git/objects/info/alternates', "$cfg{other_objects}\n") if $cfg{other_objects};
    # A nested repository, as git would find it from a subdirectory.
    (my $nested_config = $config) =~ s{touch \Q$dir\E/}{touch $dir/nested-}g;
    system('git', 'init', '-q', 'kennel-verify-nested') == 0
      and $write->('kennel-verify-nested/.git/config', $nested_config)
      and $write->('kennel-verify-nested/.git/hooks/post-checkout', "#!/bin/sh\n" . $payload->('nested-hook') . "\n", 0755);
    # Project configuration that would widen the next session.
    $write->('.kennel.toml', "[defaults]\nnetwork = \"open\"\nmounts = [\"$cfg{home}:/host-home\"]\nenv = [\"KENNEL_VERIFY_WITNESS\"]\n");
    # The agent's home as a channel to another repository's sessions.
    $write->("$ENV{HOME}/.kennel-verify-channel", $token) if $ENV{HOME};
    # Some work to review (a changed file and a new one).
    $write->('README', "changed by the agent\n");
    $write->('agent-work.txt', "work\n");
    r('planted', 'written', 'held', scalar(@written) . ' files planted (the host-side steps follow)');
}

# --- credentials -----------------------------------------------------------
if ($want{credentials}) {
    my $needle = ($cfg{needle_a} // '') . ($cfg{needle_b} // '');
    my $placeholder = $ENV{KENNEL_VERIFY_SECRET};
    if (!defined $placeholder) { r('credentials', 'placeholder', 'skipped', 'no credential in this session (network mode none or open)') }
    elsif ($placeholder eq $needle) { r('credentials', 'placeholder', 'escaped', 'the real value is in the environment') }
    else { r('credentials', 'placeholder', 'held', 'the sandbox holds a placeholder of the same length') }
    my @leaks;
    for my $file (glob('/proc/[0-9]*/environ'), glob('/proc/[0-9]*/cmdline')) {
        my $content = slurp($file) // next;
        push @leaks, $file if index($content, $needle) >= 0;
    }
    walk([ grep { defined } ($ENV{HOME}, '.', '/tmp', '/run', '/etc', '/opt') ], 20000, sub {
        my ($path, $st) = @_;
        return unless -f _ && $st->[7] < (1 << 20);
        my $content = slurp($path) // return;
        push @leaks, $path if index($content, $needle) >= 0;
    });
    @leaks
      ? r('credentials', 'real-value', 'escaped', "the real value is in @leaks[0 .. ($#leaks > 2 ? 2 : $#leaks)]")
      : r('credentials', 'real-value', 'held', 'not in any environment, command line or readable file');
    my @keys;
    # Where kennel puts its session CA and where a sandbox would look for it.
    my $bundle_dir = ($ENV{NODE_EXTRA_CA_CERTS} // '') =~ m{^(.*)/[^/]+$} ? $1 : undef;
    walk([ grep { defined } ($ENV{HOME}, '.', '/tmp', '/run', '/etc/ssl/certs', '/etc/kennel', '/usr/local/share/ca-certificates', $bundle_dir) ], 20000, sub {
        my ($path, $st) = @_;
        return unless -f _ && $st->[7] < (1 << 20);
        my $content = slurp($path) // return;
        push @keys, $path if $content =~ /-----BEGIN [A-Z ]*PRIVATE KEY-----/;
    });
    @keys
      ? r('credentials', 'ca-key', 'escaped', "a private key is readable: $keys[0]")
      : r('credentials', 'ca-key', 'held', 'no private key readable (the session CA key stays in the proxy)');
    if (defined $placeholder && $ENV{HTTP_PROXY}) {
        my $unbound = $cfg{allowed} // 'unbound.kennel-verify.invalid';
        my ($status, $reason) = proxy_ask("GET http://$unbound/ HTTP/1.1\r\nHost: $unbound\r\nAuthorization: Bearer $placeholder\r\n\r\n");
        $reason eq 'credential-not-bound'
          ? r('credentials', 'unbound-host', 'held', "the placeholder to $unbound: refused ($reason)")
          : r('credentials', 'unbound-host', 'escaped', "the placeholder to $unbound was not refused as unbound ($status $reason)");
    }
}
print "KENNEL-PROBE-DONE\n";
