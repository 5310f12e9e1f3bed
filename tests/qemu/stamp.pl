#!/usr/bin/perl
# Sends unauthenticated STAMP test packets (RFC 8762 4.2.1, 44 bytes) to HOST:PORT (QEMU's
# UDP forward to the guest's port 862) until one reflected packet comes back, and checks its
# fields against what was sent: reflected = sender sequence number (stateless reflector),
# sender timestamp and error estimate echoed, SSID kept, Ses-Sender TTL set, receive and
# transmit timestamps within 10 minutes of the host clock, transmit >= receive.
#   tests/qemu/stamp.pl HOST PORT [SECONDS]          exit 0 with one "ok ..." line
use strict;
use warnings;
use IO::Socket::INET;
use IO::Select;
use Time::HiRes qw(time);

my ($host, $port, $secs) = @ARGV;
die "usage: stamp.pl HOST PORT [SECONDS]\n" unless defined $port;
$secs //= 60;
my $sock = IO::Socket::INET->new(PeerAddr => $host, PeerPort => $port, Proto => 'udp')
  or die "stamp.pl: socket to $host:$port: $!\n";
my $sel = IO::Select->new($sock);
my $ntp_offset = 2208988800;    # 1900-01-01 to 1970-01-01
sub ntp { my $t = shift; my $s = int($t); (($s + $ntp_offset), int(($t - $s) * 2**32)) }
sub from_ntp { $_[0] - $ntp_offset + $_[1] / 2**32 }

my $deadline = time + $secs;
my $seq = 0x5100;
my $ssid = 0xbeef;
my $err = 0x0001;    # S=0, scale 0, multiplier 1
while (time < $deadline) {
  $seq++;
  my $now = time;
  my ($s, $f) = ntp($now);
  # Sequence, Timestamp, Error Estimate, SSID, MBZ (28 bytes).
  my $pkt = pack('N N N n n', $seq, $s, $f, $err, $ssid) . ("\0" x 28);
  defined $sock->send($pkt) or die "stamp.pl: send: $!\n";
  next unless $sel->can_read(2);
  my $reply;
  defined $sock->recv($reply, 2048) or next;
  my $len = length $reply;
  die "stamp.pl: reply of $len bytes, expected 44\n" unless $len == 44;
  my ($rseq, $ts, $tf, $rerr, $rssid, $rxs, $rxf, $sseq, $sts, $stf, $serr, $mbz1, $ttl) =
    unpack('N N N n n N N N N N n n C', $reply);
  my @bad;
  push @bad, "sender sequence $sseq != sent $seq" unless $sseq == $seq;
  push @bad, "reflector sequence $rseq != sender's $seq (stateless mode)" unless $rseq == $seq;
  push @bad, "sender timestamp not echoed" unless $sts == $s && $stf == $f;
  push @bad, sprintf("sender error estimate 0x%04x != 0x%04x", $serr, $err) unless $serr == $err;
  push @bad, sprintf("SSID 0x%04x != 0x%04x", $rssid, $ssid) unless $rssid == $ssid;
  push @bad, "Ses-Sender TTL is 0" unless $ttl > 0;
  my ($rx, $tx) = (from_ntp($rxs, $rxf), from_ntp($ts, $tf));
  push @bad, sprintf("receive timestamp %.3f is %.0f s from the host clock", $rx, $rx - $now)
    if abs($rx - $now) > 600;
  push @bad, sprintf("transmit timestamp %.6f before receive %.6f", $tx, $rx) if $tx < $rx;
  die "stamp.pl: bad reply: " . join('; ', @bad) . "\n" if @bad;
  printf "ok seq=%d ssid=0x%04x ttl=%d reflector-delay=%.0fus rtt=%.1fms guest-clock-offset=%.3fs\n",
    $rseq, $rssid, $ttl, ($tx - $rx) * 1e6, (time - $now) * 1e3, $rx - $now;
  exit 0;
}
die "stamp.pl: no reply from $host:$port within ${secs}s\n";
