# kennel's egress tunnel, the Pod's end (perl-base only). Listens on
# ARGV[0]:ARGV[1] and carries every connection it accepts over this exec's
# stdin and stdout to kennel, which joins each to its proxy. A frame is a
# type (O: opened, D: data, C: no more data this way), a connection
# number and a length (both 32-bit big-endian), then that many bytes.
use strict;
use warnings;
use IO::Socket::INET;
use IO::Select;

my ($host, $port) = @ARGV;
my $listener = IO::Socket::INET->new(
    LocalAddr => $host, LocalPort => $port, Listen => 128, ReuseAddr => 1,
) or die "cannot listen on $host:$port: $!\n";
binmode STDIN;
binmode STDOUT;
my $select = IO::Select->new($listener, \*STDIN);
my (%socket, %number, %read_done, %write_done);
my $next = 0;
my $input = '';

sub send_frame {
    my ($type, $id, $data) = @_;
    $data = '' unless defined $data;
    my $frame = pack('aNN', $type, $id, length $data) . $data;
    while (length $frame) {
        my $written = syswrite(STDOUT, $frame);
        exit 0 unless defined $written;
        substr($frame, 0, $written) = '';
    }
}

sub forget_if_done {
    my ($id) = @_;
    return unless $read_done{$id} && $write_done{$id};
    my $socket = delete $socket{$id};
    delete $number{fileno $socket};
    $select->remove($socket);
    close $socket;
    delete $read_done{$id};
    delete $write_done{$id};
}

sub from_kennel {
    while (length($input) >= 9) {
        my ($type, $id, $length) = unpack('aNN', $input);
        last if length($input) < 9 + $length;
        my $data = substr($input, 9, $length);
        substr($input, 0, 9 + $length) = '';
        my $socket = $socket{$id} or next;
        if ($type eq 'D' && !$write_done{$id}) {
            my $offset = 0;
            while ($offset < length $data) {
                my $written = syswrite($socket, $data, length($data) - $offset, $offset);
                unless (defined $written) { $write_done{$id} = 1; last }
                $offset += $written;
            }
        } elsif ($type eq 'C') {
            shutdown($socket, 1);
            $write_done{$id} = 1;
            forget_if_done($id);
        }
    }
}

while (1) {
    for my $ready ($select->can_read) {
        if ($ready == $listener) {
            my $client = $listener->accept or next;
            my $id = ++$next;
            $socket{$id} = $client;
            $number{fileno $client} = $id;
            $select->add($client);
            send_frame('O', $id);
        } elsif (fileno($ready) == fileno(STDIN)) {
            my $read = sysread(STDIN, $input, 65536, length $input);
            exit 0 unless $read;
            from_kennel();
        } else {
            my $id = $number{fileno $ready};
            my $read = sysread($ready, my $data, 65536);
            if ($read) {
                send_frame('D', $id, $data);
            } else {
                send_frame('C', $id);
                $select->remove($ready);
                $read_done{$id} = 1;
                forget_if_done($id);
            }
        }
    }
}
