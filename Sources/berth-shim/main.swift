import BerthShim
import Glibc

exit(ShimCommand.main(CommandLine.arguments))
